"""Issue 9 section 1 on real (nftables) NATs: a running ``p2pstack node --stun`` learns
its NAT kind on its *own* UDP port (bound to 0.0.0.0:39001, the port QUIC and the DHT
use), reports it as a ``nat.report`` event and in ``status``, and keepalives run only
behind a NAT. Root only; skipped with the reason otherwise. Contacts only lab addresses.

The node runs inside the site's host namespace; the test waits for its ``nat.report``
log line (``--log-json`` on stderr), then asks ``status`` over the control socket (a
Unix socket in the data directory, reachable from the test's namespace).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab.lab import NAT_KINDS, Lab, Site

EIM = EIF = "endpoint-independent"
ADF = "address-dependent"
APDM = APDF = "address-and-port-dependent"
EXPECTED = {
    "none": (EIM, EIF, "open"),
    "full-cone": (EIM, EIF, "full-cone"),
    "restricted-cone": (EIM, ADF, "restricted-cone"),
    "port-restricted-cone": (EIM, APDF, "port-restricted-cone"),
    "symmetric": (APDM, APDF, "symmetric"),
}
REPO = Path(__file__).resolve().parents[2]
PORT = 39001

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=NAT_KINDS)
def site(request: pytest.FixtureRequest, lab: Lab) -> Site:
    return lab.add_site(request.param)


def _await_log_event(proc: subprocess.Popen[str], name: str, timeout: float) -> dict:
    """The first JSON log line on the node's stderr with ``event == name``."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if not ready:
            break
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == name:
            return record
    raise AssertionError(f"no {name} within {timeout}s; stderr:\n{''.join(seen[-20:])}")


def test_a_running_node_learns_its_nat_on_its_own_port(lab: Lab, site: Site,
                                                       tmp_path: Path) -> None:
    ip, port = lab.stun_primary
    data = tmp_path / "node"
    env = dict(os.environ, P2PSTACK_HOME=str(data))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", site.host_ns, sys.executable, "-m", "stack.cli",
         "--log-json", "node", "--listen", f"0.0.0.0:{PORT}", "--no-tls",
         "--stun", f"{ip}:{port}", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        event = _await_log_event(proc, "nat.report", 30)
        mapping, filtering, kind = EXPECTED[site.kind]
        assert (event["mapping"], event["filtering"], event["type"]) == \
            (mapping, filtering, kind), f"{event}\n{lab.router_state(site)}"
        assert event["nat"] is site.nat and event["reason"] == "start"
        public_ip, public_port = event["public_address"].split(":")
        assert public_ip == site.public_ip
        if site.kind != "symmetric":  # the lab's cone routers preserve ports
            assert int(public_port) == PORT, event
        out = subprocess.run([sys.executable, "-m", "stack.cli", "--data-dir", str(data),
                              "status", "--json"], capture_output=True, text=True,
                             timeout=20, env=env, cwd=REPO)
        assert out.returncode == 0, out.stderr
        nat = json.loads(out.stdout)["nat"]
        assert (nat["behaviour"]["mapping"], nat["behaviour"]["filtering"],
                nat["behaviour"]["type"]) == (mapping, filtering, kind)
        assert nat["keepalive"]["interval_s"] == 25.0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
