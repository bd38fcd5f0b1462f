"""The lab skips with a stated reason where it cannot run (these run everywhere)."""

from __future__ import annotations

import pytest

from netlab import lab


def test_not_root_is_a_stated_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    assert lab.skip_reason() == "the real-NAT lab needs root (network namespaces, nftables)"


@pytest.mark.parametrize(("tool", "package"), [("nft", "nftables"), ("turnserver", "coturn"),
                                               ("ip", "iproute2")])
def test_missing_tool_is_a_stated_reason(monkeypatch: pytest.MonkeyPatch, tool: str,
                                         package: str) -> None:
    monkeypatch.setattr(lab.os, "geteuid", lambda: 0)
    real_which = lab.shutil.which
    monkeypatch.setattr(lab.shutil, "which", lambda name: None if name == tool else
                        real_which(name))
    reason = lab.skip_reason()
    assert reason is not None and f"`{tool}`" in reason and package in reason


def test_run_prefix_is_unique_per_process() -> None:
    assert lab.run_prefix(123) == "p2ps-123-"
    assert lab.run_prefix() == f"p2ps-{lab.os.getpid()}-"
