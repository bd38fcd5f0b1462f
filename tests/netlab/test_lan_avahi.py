"""Issue 12 section 3, interop: avahi (Debian's avahi-daemon + avahi-utils, a real
third-party mDNS stack) and p2pstack on one lab LAN. Both directions work and are
tested: ``avahi-browse`` resolves our node's advertisement (SRV, A and the ``dnsaddr``
TXT), and ``p2pstack discover`` sees a service published with ``avahi-publish-service``.
Then avahi plays Mallory: it publishes a claim of another node's peer id at an address
where a different p2pstack node answers; connecting by that peer id refutes the claim at
the handshake (counted ``spoofed``) and does not connect to the impostor.

avahi-daemon runs inside the host namespace with its own D-Bus system bus (a
dbus-daemon whose socket is in the test's directory) and its own /run/avahi-daemon (a
tmpfs in the namespace's private mount table), so nothing of the machine's is touched.
Skipped with the reason where the packages are missing (.ci/run installs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab.lab import Lab, Site
from netlab.lannodes import REPO, Nodes, ids

pytestmark = pytest.mark.timeout(90)

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""
AVAHI_CONF = """[server]
host-name=avahilab
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
"""


def missing() -> str | None:
    for tool, package in (("avahi-daemon", "avahi-daemon"), ("avahi-browse", "avahi-utils"),
                          ("avahi-publish-service", "avahi-utils"),
                          ("dbus-daemon", "dbus")):
        if shutil.which(tool) is None:
            return f"avahi interop needs `{tool}` (Debian package {package}; .ci/run installs it)"
    return None


class Avahi:
    """avahi-daemon (and its D-Bus) in one lab namespace; every process killed at close."""

    def __init__(self, lab: Lab, site: Site, workdir: Path) -> None:
        self.lab, self.site, self.dir = lab, site, workdir
        self.bus = workdir / "bus"
        self.env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={self.bus}")
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *argv: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.dir / log, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.site.host_ns, *argv],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    env=self.env)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        (self.dir / "bus.conf").write_text(BUS_CONF.format(path=self.bus))
        (self.dir / "avahi.conf").write_text(AVAHI_CONF)
        self.spawn("dbus-daemon", "--nofork", f"--config-file={self.dir / 'bus.conf'}",
                   log="dbus.log")
        self.wait_for(lambda: self.bus.exists(), "dbus-daemon's socket")
        # avahi-daemon insists on /run/avahi-daemon/pid: a tmpfs of this namespace only
        # (ip netns exec gives the command a private mount table).
        self.spawn("sh", "-c", "mkdir -p /run/avahi-daemon && "
                   "mount -t tmpfs tmpfs /run/avahi-daemon && exec avahi-daemon "
                   f"-f {self.dir / 'avahi.conf'} --no-drop-root --no-chroot --no-rlimits",
                   log="avahi.log")
        self.wait_for(lambda: "Server startup complete" in self.log("avahi.log"),
                      "avahi-daemon's start")

    def log(self, name: str) -> str:
        path = self.dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, ready: object, what: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            if time.monotonic() > end or any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"{what}: not ready; {self.log('avahi.log')[-1500:]}"
                                     f"{self.log('dbus.log')[-500:]}")
            time.sleep(0.05)

    def browse(self) -> list[list[str]]:
        """``avahi-browse -rpt _p2p._udp``: the resolved ("=") lines, split."""
        result = self.lab.run(self.site.host_ns, ["avahi-browse", "-rpt", "_p2p._udp"],
                              env=self.env, timeout=20)
        assert result.returncode == 0, result.stderr
        return [line.split(";") for line in result.stdout.splitlines()
                if line.startswith("=")]

    def publish(self, name: str, port: int, *txt: str) -> None:
        proc = self.spawn("avahi-publish-service", name, "_p2p._udp", str(port), *txt,
                          log=f"publish-{name}.log")
        self.wait_for(lambda: "Established" in self.log(f"publish-{name}.log"),
                      f"avahi-publish-service {name}")
        assert proc.poll() is None

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


@pytest.fixture
def nodes(lab: Lab, tmp_path: Path) -> Iterator[Nodes]:
    group = Nodes(lab, tmp_path)
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def lan(lab: Lab) -> list[Site]:
    return lab.add_lan("port-restricted-cone", hosts=3)


@pytest.fixture
def avahi(lab: Lab, lan: list[Site], tmp_path: Path) -> Iterator[Avahi]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    daemon = Avahi(lab, lan[0], tmp_path)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


def test_avahi_browse_resolves_our_advertisement(avahi: Avahi, lan: list[Site],
                                                 nodes: Nodes) -> None:
    ours = lan[1]
    node = nodes.start(ours, "ours")
    end = time.monotonic() + 15
    while not (found := [r for r in avahi.browse() if node["peer_id"] in r[-1]]):
        assert time.monotonic() < end, "avahi-browse never resolved our service"
    iface, proto, instance, service, domain, host, address, port, txt = found[0][1:]
    assert (iface, proto, service, domain) == ("eth0", "IPv4", "_p2p._udp", "local")
    assert (address, port) == (ours.host_ip, "39001") and host == f"{instance}.p2p.local"
    assert f'"dnsaddr=/ip4/{ours.host_ip}/udp/39001/quic-v1/p2p/{node["peer_id"]}"' in txt


def test_our_browser_sees_an_avahi_published_service(avahi: Avahi, lan: list[Site],
                                                     nodes: Nodes) -> None:
    from stack.base.identity import Identity
    peer = Identity.generate().peer_id
    addr = f"/ip4/{lan[0].host_ip}/udp/4242/quic-v1/p2p/{peer}"
    avahi.publish("avahipeer", 4242, f"dnsaddr={addr}", "name=made by avahi")
    out = nodes.cli(lan[1], "nobody", "discover", "--timeout", "3")
    [row] = [p for p in out["peers"] if p["peer_id"] == str(peer)]
    assert (row["instance"], row["name"], row["addrs"]) == ("avahipeer", "made by avahi",
                                                           [addr])


def test_a_claim_of_someone_elses_peer_id_is_refuted_at_the_handshake(
        avahi: Avahi, lan: list[Site], nodes: Nodes) -> None:
    """Mallory (lan[0]) runs a p2pstack node of her own and has avahi claim Alice's id
    at her address; Alice advertises nothing (--no-mdns), so that claim is all Bob has.
    Bob's dial there proves Mallory's id: refused (exit 1, naming who answered) and
    counted, and avahi's later answers with that claim are not believed."""
    mallory_site, bob_site, alice_site = lan
    mallory, alice, _ = nodes.start_all((mallory_site, "mallory", "--no-mdns"),
                                        (alice_site, "alice", "--no-mdns"), (bob_site, "bob"))
    lie = f"/ip4/{mallory_site.host_ip}/udp/39001/quic-v1/p2p/{alice['peer_id']}"
    avahi.publish("notalice", 39001, f"dnsaddr={lie}")
    nodes.discover_until(bob_site, "bob", alice["peer_id"])
    result = nodes.lab.run(bob_site.host_ns, [sys.executable, "-m", "stack.cli", "connect",
                                              alice["peer_id"], "--json"],
                           env=nodes.env("bob"), cwd=REPO, timeout=30)
    assert result.returncode == 1 and mallory["peer_id"] in result.stderr, result.stderr
    counters = nodes.cli(bob_site, "bob", "status")["mdns"]["counters"]
    assert counters["spoofed"] == 1, counters
    after = nodes.cli(bob_site, "bob", "discover", "--timeout", "1")  # avahi answers again
    assert alice["peer_id"] not in ids(after)
    assert nodes.cli(bob_site, "bob", "status")["mdns"]["counters"]["from_refuted"] >= 1


def test_a_squatted_instance_name_does_not_hide_us(avahi: Avahi, lan: list[Site],
                                                   nodes: Nodes) -> None:
    """Our instance name is derived from the peer id, so anyone can take it first: avahi
    publishes it (with a claim of Alice's id at Mallory's address) before Alice starts.
    zeroconf's probe finds the conflict and Alice registers under another name; Bob
    still finds her real address and reaches her over the LAN."""
    from discovery.lan import instance_name
    from stack.base.identity import PeerId

    mallory_site, bob_site, alice_site = lan
    alice_id = nodes.cli(alice_site, "alice", "id")["peer_id"]
    squatted = instance_name(PeerId.parse(alice_id))
    lie = f"/ip4/{mallory_site.host_ip}/udp/39001/quic-v1/p2p/{alice_id}"
    avahi.publish(squatted, 39001, f"dnsaddr={lie}")
    alice = nodes.start(alice_site, "alice")
    assert alice["peer_id"] == alice_id
    nodes.start(bob_site, "bob")
    real = f"/ip4/{alice_site.host_ip}/udp/39001/quic-v1/p2p/{alice_id}"
    end = time.monotonic() + 20
    while real not in [a for p in nodes.cli(bob_site, "bob", "discover", "--timeout", "1")
                       ["peers"] for a in p["addrs"]]:
        assert time.monotonic() < end, nodes.log("alice")
    assert nodes.cli(alice_site, "alice", "status")["mdns"]["instance"] != squatted
    reply = nodes.cli(bob_site, "bob", "connect", alice_id)
    assert (reply["peer_id"], reply["path"]) == (alice_id, "lan")
