"""Issue 9 section 1 on real (nftables) NATs: a running ``p2pstack node --stun`` learns
its NAT kind on its *own* UDP port (bound to 0.0.0.0:39001, the port QUIC and the DHT
use), reports it as a ``nat.report`` event and in ``status``, and keepalives run only
behind a NAT. Root only; skipped with the reason otherwise. Contacts only lab addresses.

Each node runs inside its site's host namespace; the five start together (one module
fixture) so that their detections overlap. Each test waits for its node's ``nat.report``
log line (``--log-json`` on stderr), then asks ``status`` over the control socket (a
Unix socket in the data directory, reachable from the test's namespace).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
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

pytestmark = pytest.mark.timeout(90)  # the first test also waits for the five to start


class NodeRun:
    """One ``p2pstack node --log-json`` in a site's host namespace; a thread drains its
    stderr (so the node never blocks on a full pipe) and keeps the first ``nat.report``."""

    def __init__(self, lab: Lab, site: Site, data: Path) -> None:
        ip, port = lab.stun_primary
        self.site, self.data = site, data
        self.env = dict(os.environ, P2PSTACK_HOME=str(data))
        self.lines: list[str] = []
        self.report: dict | None = None
        self.reported = threading.Event()  # set at the report, or when stderr ends
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", site.host_ns, sys.executable, "-m", "stack.cli",
             "--log-json", "node", "--listen", f"0.0.0.0:{PORT}", "--no-tls",
             "--stun", f"{ip}:{port}", "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env,
            cwd=REPO)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if self.report is None:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("event") == "nat.report":
                    self.report = record
                    self.reported.set()
        self.reported.set()  # the node exited: no report will come

    def await_report(self, timeout: float) -> dict:
        self.reported.wait(timeout)
        if self.report is None:
            raise AssertionError(f"no nat.report within {timeout}s; stderr:\n"
                                 + "".join(self.lines[-20:]))
        return self.report

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


@pytest.fixture(scope="module")
def running(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeRun]]:
    """A node behind each NAT kind, all started at once: their detections (which wait
    out STUN timeouts behind the filtering NATs) overlap instead of adding up."""
    tmp = tmp_path_factory.mktemp("node_nat")
    nodes: dict[str, NodeRun] = {}
    try:
        for kind in NAT_KINDS:
            nodes[kind] = NodeRun(lab, lab.add_site(kind), tmp / kind)
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


@pytest.mark.parametrize("kind", NAT_KINDS)
def test_a_running_node_learns_its_nat_on_its_own_port(lab: Lab, running: dict[str, NodeRun],
                                                       kind: str) -> None:
    node = running[kind]
    site = node.site
    event = node.await_report(45)
    mapping, filtering, nat_type = EXPECTED[site.kind]
    assert (event["mapping"], event["filtering"], event["type"]) == \
        (mapping, filtering, nat_type), f"{event}\n{lab.router_state(site)}"
    assert event["nat"] is site.nat and event["reason"] == "start"
    public_ip, public_port = event["public_address"].split(":")
    assert public_ip == site.public_ip
    if site.kind != "symmetric":  # the lab's cone routers preserve ports
        assert int(public_port) == PORT, event
    out = subprocess.run([sys.executable, "-m", "stack.cli", "--data-dir", str(node.data),
                          "status", "--json"], capture_output=True, text=True,
                         timeout=20, env=node.env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    nat = json.loads(out.stdout)["nat"]
    assert (nat["behaviour"]["mapping"], nat["behaviour"]["filtering"],
            nat["behaviour"]["type"]) == (mapping, filtering, nat_type)
    assert nat["keepalive"]["interval_s"] == 25.0
