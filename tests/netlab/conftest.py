"""Fixtures of the real-NAT lab (tests/netlab/lab.py): one internet + coturn per module,
a fresh router and host per test, everything torn down even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netlab.lab import Lab, run_prefix, skip_reason, sweep, sweep_stale


@pytest.fixture(scope="session")
def lab_sweep() -> Iterator[None]:
    """Once per run: clear namespaces left by aborted earlier runs; at the end, this run's."""
    sweep_stale()
    yield
    sweep(run_prefix())


@pytest.fixture(scope="module")
def lab(lab_sweep: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    net = Lab(tmp_path_factory.mktemp("netlab"))
    try:
        net.start()
        yield net
    finally:
        net.close()
