"""Issue 9 section 2 on real NATs: a node behind a symmetric (nftables) NAT, which no one
can dial and no punch reaches, is reached through a public relay, by relayed multiaddr
and by peer id alone, from a host behind another symmetric NAT. The real commands
(``p2pstack node``, ``status``, ``connect``) run inside the lab's namespaces. Root only;
skipped with the reason otherwise. Contacts only lab addresses."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netlab.lab import Lab

REPO = Path(__file__).resolve().parents[2]
PORT = 39001

pytestmark = pytest.mark.timeout(120)


class Nodes:
    """``p2pstack node`` processes in lab namespaces; all stopped at the end."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []

    def cli(self, ns: str, name: str, *args: str, timeout: float = 60) -> dict:
        result = self.lab.run(ns, [sys.executable, "-m", "stack.cli", "--data-dir",
                                   str(self.tmp / name), *args, "--json"],
                              timeout=timeout, cwd=REPO, env=dict(os.environ))
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return json.loads(result.stdout)

    def start(self, ns: str, name: str, *args: str) -> dict:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "stack.cli", "--data-dir",
             str(self.tmp / name), "node", "--listen", f"0.0.0.0:{PORT}", "--no-tls",
             "--json", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        self.procs.append(proc)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(30), f"{name} printed nothing"
        return json.loads(proc.stdout.readline())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def test_symmetric_nat_node_is_reached_through_a_public_relay(lab: Lab, tmp_path: Path) -> None:
    relay_site, target_site, client_site = (lab.add_site("none"), lab.add_site("symmetric"),
                                            lab.add_site("symmetric"))
    nodes = Nodes(lab, tmp_path)
    try:
        relay = nodes.start(relay_site.host_ns, "relay")
        relay_addr = f"/ip4/{relay_site.public_ip}/udp/{PORT}/quic-v1/p2p/{relay['peer_id']}"
        assert relay_addr in relay["addrs"]
        target = nodes.start(target_site.host_ns, "target", "--relay", relay_addr,
                             "--relay-service", "off", "--bootstrap", relay_addr)
        relayed = f"{relay_addr}/p2p-circuit/p2p/{target['peer_id']}"
        for _ in range(150):  # reservation and announcement happen in the background
            status = nodes.cli(target_site.host_ns, "target", "status")
            if relayed in status["announced"] and status["dht"]["published_seq"]:
                break
        assert status["relay"]["reservations"] == [relayed], status
        assert status["nat"]["observed_address"] is None  # symmetric: never confirmed

        out = nodes.cli(client_site.host_ns, "client", "connect", relayed, "--standalone",
                        "--message", "through two symmetric NATs")
        assert (out["peer_id"], out["path"], out["reply"]) == (
            target["peer_id"], "relayed", "through two symmetric NATs")

        # by peer id alone: the DHT announcement, the private address fails, then the relay
        out = nodes.cli(client_site.host_ns, "client2", "connect", target["peer_id"],
                        "--standalone", "--bootstrap", relay_addr, "--timeout", "40",
                        "--message", "by peer id")
        assert (out["peer_id"], out["path"], out["reply"]) == (target["peer_id"], "relayed",
                                                               "by peer id")
        stats = nodes.cli(relay_site.host_ns, "relay", "status")["relay"]["stats"]
        assert stats["granted.circuits"] == 2 and stats["granted.reservations"] == 1, stats
    finally:
        nodes.stop()
