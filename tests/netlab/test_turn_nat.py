"""Issue 9 section 4, TURN fallback through coturn on real NATs: a node behind a
symmetric (nftables) NAT allocates on a TURN coturn on the lab's internet and announces
the relayed address; a host behind another symmetric NAT (a pair no punch reaches)
reaches it there with no TURN of its own, by TURN multiaddr and by peer id (``ping
--json``: path ``turn``). The real commands run inside the lab's namespaces. Root only;
skipped with the reason otherwise. Contacts only lab addresses."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from netlab.lab import Lab
from netlab.test_relay_nat import PORT, Nodes

pytestmark = pytest.mark.timeout(120)

TURN_IP, TURN_PORT = "203.0.113.4", 3478


@contextlib.contextmanager
def turn_server(lab: Lab, workdir: Path):
    """A TURN coturn (long-term credentials ``user:pass``) on the lab's internet, beside
    the lab's STUN-only one."""
    result = lab.run(lab.inet, ["ip", "addr", "add", f"{TURN_IP}/24", "dev", "br0"])
    assert result.returncode == 0, result.stderr
    argv = ["ip", "netns", "exec", lab.inet, "turnserver", "-n",
            "--listening-ip", TURN_IP, "--relay-ip", TURN_IP,
            "--listening-port", str(TURN_PORT), "--min-port", "49152", "--max-port", "49352",
            "--lt-cred-mech", "--user", "user:pass", "--realm", "lab.test",
            "--no-tls", "--no-dtls", "--no-tcp", "--no-tcp-relay", "--no-cli",
            "--relay-threads", "1", "--log-file", str(workdir / "turn.log"), "--simple-log",
            "--no-stdout-log", "--pidfile", str(workdir / "turn.pid"),
            "--db", str(workdir / "turndb")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield f"turn:user:pass@{TURN_IP}:{TURN_PORT}"
    finally:
        proc.kill()
        proc.wait()


def test_symmetric_nat_node_is_reached_through_coturn(lab: Lab, tmp_path: Path) -> None:
    boot_site, target_site, client_site = (lab.add_site("none"), lab.add_site("symmetric"),
                                           lab.add_site("symmetric"))
    nodes = Nodes(lab, tmp_path)
    with turn_server(lab, tmp_path) as url:
        try:
            boot = nodes.start(boot_site.host_ns, "boot", "--relay-service", "off")
            boot_addr = f"/ip4/{boot_site.public_ip}/udp/{PORT}/quic-v1/p2p/{boot['peer_id']}"
            # the client's router's public IP: where its packets to the TURN server come
            # from (a symmetric NAT's port changes per destination, its IP does not)
            target = nodes.start(target_site.host_ns, "target", "--bootstrap", boot_addr,
                                 "--relay-service", "off", "--turn", url,
                                 "--turn-permit", client_site.public_ip)
            for _ in range(150):  # allocation and announcement happen in the background
                status = nodes.cli(target_site.host_ns, "target", "status")
                turn = [a for a in status["announced"] if "/p2p-turn/" in a]
                if turn and status["dht"]["published_seq"]:
                    break
            [allocation] = status["turn"]
            assert allocation["server"] == f"turn:user@{TURN_IP}:{TURN_PORT}", status
            assert turn == [f"{allocation['address']}/p2p/{target['peer_id']}"]
            assert allocation["address"].startswith(f"/ip4/{TURN_IP}/udp/")

            # ping, not connect: connect also waits for the target's dial-back verdict,
            # which here is a dial-back to a private address that cannot arrive
            out = nodes.cli(client_site.host_ns, "client", "ping", turn[0], "--standalone",
                            "--count", "3")
            assert (out["peer_id"], out["path"], out["reply"]) == (
                target["peer_id"], "turn", "pong") and len(out["rtts_ms"]) == 3

            # by peer id alone: the DHT record's private address fails, then TURN
            out = nodes.cli(client_site.host_ns, "client2", "ping", target["peer_id"],
                            "--standalone", "--bootstrap", boot_addr, "--timeout", "40")
            assert (out["peer_id"], out["path"]) == (target["peer_id"], "turn"), out
        finally:
            nodes.stop()
