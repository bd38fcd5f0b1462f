"""Issue 9 section 4 on real NATs: the connect matrix end to end through ``p2pstack``.

One lab (``netmatrix.NetMatrix``): a public bootstrap/relay node and, for each of the
five kinds (public, full cone, restricted cone, port-restricted cone, symmetric), a
dialer and a target node, each behind an nftables router of its own whose UDP mappings
time out after 10 s (conntrack and the cone routers' sets, set in the router
namespaces; the nodes' keepalive is 5 s). After the nodes are joined, published and
reserved, the lab idles 15 s, past that timeout; then ``p2pstack connect TARGET_ID
--json`` runs for all 25 dialer x target pairs at once, through each running dialer
node's control socket. Every pair must be reachable; every pair a punch can open must
end on a direct path (``direct``: a dial or connection reversal; ``punched``), port-
restricted cone <-> symmetric through the birthday technique (``punched``); the one no
punch can open (symmetric <-> symmetric; no TURN in this lab) stays ``relayed``.

Root only (network namespaces, nftables, coturn); skipped with the reason otherwise.
Contacts only lab addresses. Namespaces ``p2ps-<pid>-nm-*``: distinct from the other
netlab tests', all removed at the end, also on failure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netlab.lab import _ruleset, run_prefix, skip_reason
from netlab.netmatrix import (BIRTHDAY, CUE, INFEASIBLE, KINDS, REPO, SHORT, NetMatrix, _env,
                              markdown, summary)

MAPPING_TIMEOUT = 10


@pytest.mark.timeout(300)  # ~45 s on an idle 2-core machine; the margin is for load
def test_every_nat_kind_pair_connects_after_an_idle_mapping_timeout(
        lab_sweep: None, tmp_path: Path) -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    matrix = NetMatrix(tmp_path, mapping_timeout=MAPPING_TIMEOUT, keepalive=5.0,
                       connect_timeout=15.0, prefix=f"{run_prefix()}nm-")
    try:
        matrix.start()
        pairs = matrix.run_pairs(idle=MAPPING_TIMEOUT + 5.0)
        logs = {m.name: matrix.log_tail(m) for m in matrix.members()}
    finally:
        matrix.close()
    assert not [ns for ns in _namespaces() if ns.startswith(f"{run_prefix()}nm-")]
    assert matrix.idled_s >= MAPPING_TIMEOUT + 5.0
    table = markdown(pairs) + "\n" + "\n".join(
        f"{p.dialer} -> {p.target}: {p.error or p.holepunch}" for p in pairs)
    assert len(pairs) == len(KINDS) ** 2, table
    failed = [p for p in pairs if not p.reachable]
    assert not failed, f"{table}\n" + "\n".join(
        f"--- d-{p.dialer} / t-{p.target} logs:\n{logs.get(_name('d', p.dialer))}\n"
        f"{logs.get(_name('t', p.target))}" for p in failed[:2])
    for p in pairs:
        expected = {"relayed"} if (p.dialer, p.target) in INFEASIBLE else {"direct",
                                                                            "punched"}
        assert p.path in expected, f"{p.dialer} -> {p.target}: {p.path}\n{table}"
        assert p.first_byte_ms is not None and p.first_byte_ms > 0, table
    for p in pairs:
        if (p.dialer, p.target) in BIRTHDAY:
            assert p.path == "punched", f"{p.dialer} -> {p.target}: {p.holepunch}\n{table}"
    assert summary(pairs) == {"pairs": 25, "reachable": 25, "direct": 24, "relayed": 1}


def _name(role: str, kind: str) -> str:
    return f"{role}-{SHORT[kind]}"


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# -- the parts that run everywhere --------------------------------------------------------

def test_keepalive_must_come_before_the_mapping_timeout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keepalive must come before"):
        NetMatrix(tmp_path, mapping_timeout=5, keepalive=5.0)


def test_a_short_mapping_timeout_reaches_the_cone_routers_sets() -> None:
    rules = _ruleset("restricted-cone", "10.1.0.0/24", "10.1.0.2", "203.0.113.11", 10)
    assert rules.count("timeout 10s;") == 2 and "120s" not in rules
    assert "timeout 120s;" in _ruleset("full-cone", "10.1.0.0/24", "10.1.0.2",
                                       "203.0.113.11")


def test_a_cli_never_cued_exits_without_running() -> None:
    """The pre-started CLI of an abandoned run (stdin closed, no cue) does nothing."""
    result = subprocess.run([sys.executable, str(CUE), "status"], input="",
                            capture_output=True, text=True, timeout=60, cwd=REPO, env=_env())
    assert (result.returncode, result.stdout) == (130, "ready\n"), result.stderr
