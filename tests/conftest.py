"""Suite-wide test settings.

The suite runs on two workers (pytest-xdist, ``-n 2 --dist loadgroup`` in pyproject.toml's
``addopts``; ``-p no:xdist`` or ``-n 0`` runs it in one process). Each file's tests stay
on one worker, so a module's fixtures (a lab internet, a simulation run) are built once,
and every real-NAT lab test runs on the same worker, one after another: their timing
margins (keepalives against the routers' mapping timeouts) assume a core of their own.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::")[0]
        group = "netlab" if path.startswith("tests/netlab/") else path
        item.add_marker(pytest.mark.xdist_group(group))
