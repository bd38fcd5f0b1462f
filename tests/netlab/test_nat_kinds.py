"""Issue 3 section 5: `p2pstack nat` behind each kind of real (nftables) NAT reports that
kind. Root only; skipped with the reason otherwise. Contacts only lab addresses.

Two layers of assertion, so a failure points at the right side:
- the lab's own probe (stunprobe.py, independent of p2pstack) shows each router behaves
  as its kind says;
- the real command, ``python -m stack.cli nat --stun 203.0.113.2:3478 --json``, run inside
  the host namespace, reports the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netlab.lab import (HAIRPIN_KINDS, NAT_KINDS, STUN_PROBE, Lab, LabError, Site, run_prefix,
                        sweep, sweep_stale)

EIM = EIF = "endpoint-independent"
ADF = "address-dependent"
APDM = APDF = "address-and-port-dependent"

#: kind -> (mapping, filtering, classic type name)
EXPECTED = {
    "none": (EIM, EIF, "open"),
    "full-cone": (EIM, EIF, "full-cone"),
    "restricted-cone": (EIM, ADF, "restricted-cone"),
    "port-restricted-cone": (EIM, APDF, "port-restricted-cone"),
    "symmetric": (APDM, APDF, "symmetric"),
}
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=NAT_KINDS)
def site(request: pytest.FixtureRequest, lab: Lab) -> Site:
    return lab.add_site(request.param)


def stun_server(lab: Lab) -> str:
    ip, port = lab.stun_primary
    return f"{ip}:{port}"


def test_lab_router_behaves_as_its_kind(lab: Lab, site: Site) -> None:
    """The lab itself, checked with its own STUN probe (RFC 5780 tests, aioice codec)."""
    result = lab.run(site.host_ns, [sys.executable, str(STUN_PROBE), "classify",
                                    stun_server(lab)])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    mapping, filtering, _ = EXPECTED[site.kind]
    assert (report["mapping"], report["filtering"]) == (mapping, filtering), \
        lab.router_state(site)
    assert report["nat"] is site.nat
    assert report["public_address"].split(":")[0] == site.public_ip
    # "none" hairpins trivially: the host's own address is public.
    assert report["hairpin"] is (site.hairpin or not site.nat)


def test_p2pstack_nat_reports_the_kind(lab: Lab, site: Site, tmp_path: Path) -> None:
    env = dict(os.environ, P2PSTACK_HOME=str(tmp_path))
    # --timeout 1.5 (default 3): a lab round trip takes well under a millisecond, and
    # behind the filtering NATs the tests that must get no answer wait out the timeout.
    result = lab.run(site.host_ns, [sys.executable, "-m", "stack.cli", "nat",
                                    "--stun", stun_server(lab), "--timeout", "1.5", "--json"],
                     env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    mapping, filtering, kind_name = EXPECTED[site.kind]
    assert (report["mapping"], report["filtering"], report["type"]) == \
        (mapping, filtering, kind_name), f"{report}\n{lab.router_state(site)}"
    assert report["nat"] is site.nat
    assert report["public_address"].split(":")[0] == site.public_ip
    if report["hairpin"] is not None:  # null: the command did not test it
        assert report["hairpin"] is (site.hairpin or not site.nat)


def test_kind_names_and_behaviour_match_the_simulator() -> None:
    """Issue 3 section 2: the simulated NAT boxes share the lab's kind names and meaning."""
    from simulations.nat import HAIRPIN_KINDS as SIM_HAIRPIN
    from simulations.nat import NAT_KINDS as SIM_KINDS

    assert set(SIM_KINDS) == set(NAT_KINDS)
    assert SIM_HAIRPIN == HAIRPIN_KINDS
    for kind, sim in SIM_KINDS.items():
        if sim is not None:
            assert sim[:2] == EXPECTED[kind][:2], kind


def test_unknown_kind_is_refused(lab: Lab) -> None:
    with pytest.raises(ValueError, match="unknown NAT kind"):
        lab.add_site("cone-ish")


def test_lab_error_names_the_failing_command(lab: Lab) -> None:
    with pytest.raises(LabError, match=r"ip -n .*no-such-ns"):
        Lab._ip(f"{run_prefix()}no-such-ns", "link", "show")


def test_sweep_kills_processes_and_deletes_namespaces(lab: Lab) -> None:
    """The tear-down path used after failures: nothing of a swept prefix survives."""
    prefix = f"{run_prefix()}sweep-"
    ns = f"{prefix}a"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sh", "-c", "echo in; exec sleep 60"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline() == "in\n"
        assert sweep(prefix) == [ns]
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert ns not in listed.stdout
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        sleeper.stdout.close()


def test_stale_sweep_spares_live_runs(lab: Lab) -> None:
    """Namespaces of a run whose process is gone are swept; a live run's are left alone."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = f"{run_prefix(dead.pid)}x", f"{run_prefix(1)}{os.getpid()}-x"
    for ns in (stale, live):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        swept = sweep_stale()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        # (A concurrent run's own stale sweep may have taken ``stale`` first.)
        assert stale not in listed
        assert live not in swept and live in listed
    finally:
        sweep(stale)
        sweep(live)
