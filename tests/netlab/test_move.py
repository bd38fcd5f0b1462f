"""Issue 10 sections 3 and 4 on real (nftables) NATs: a running node's address changes
inside its namespace (``ip addr del`` / ``ip addr add``, plus the default route behind
a router) and nothing is restarted. Root only; skipped with the reason otherwise.
Contacts only lab addresses.

- The mover dialed a public peer (it is the QUIC client): the connection migrates (the
  peer validates the new path: through the router, a new public mapping), and a stream
  written half before and half after the move arrives whole. Publicly and behind a
  port-restricted cone NAT in CI; every NAT kind with ``P2PSTACK_NETLAB_ALL_KINDS=1``.
- A public mover the peer had dialed (it is the server, which QUIC cannot move): both
  sides replace the connection, one ``connection.replaced`` each, and the peer reaches
  the mover at its new address.

Namespaces are this run's ``p2ps-<pid>-mv-*`` (no STUN server: these tests need none).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netlab.lab import NAT_KINDS, Lab, Site, _sh, run_prefix, skip_reason, sweep

REPO = Path(__file__).resolve().parents[2]
MOVENODE = Path(__file__).with_name("movenode.py")
T = 15.0

KINDS = (NAT_KINDS if os.environ.get("P2PSTACK_NETLAB_ALL_KINDS")
         else ("none", "port-restricted-cone"))

pytestmark = pytest.mark.timeout(90)


class MoveLab(Lab):
    """The lab's internet (one bridge) without its STUN server."""

    def start(self, ready_timeout: float = 10.0) -> None:
        self._add_namespace(self.inet)
        self._ip(self.inet, "link", "add", "br0", "type", "bridge")
        self._ip(self.inet, "addr", "add", "203.0.113.1/24", "dev", "br0")
        self._ip(self.inet, "link", "set", "br0", "up")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Only this module's namespaces are created and swept (other runs' are theirs)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    prefix = f"{run_prefix()}mv-"
    net = MoveLab(tmp_path_factory.mktemp("movelab"), prefix=prefix)
    try:
        net.start()
        yield net
    finally:
        net.close()
        sweep(prefix)


class MoveNode:
    """``movenode.py`` in a site's namespace: commands in, JSON events out."""

    def __init__(self, site: Site, tmp: Path, name: str) -> None:
        self.site, self.name, self.tmp = site, name, tmp
        self.log = tmp / f"{name}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", site.host_ns, sys.executable, str(MOVENODE),
                 str(tmp / name)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True, cwd=REPO)
        self.seen: list[dict[str, Any]] = []
        # a reader thread: select() on a buffered pipe misses lines already buffered
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, *words: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()

    def wait(self, event: str, timeout: float = T, **match: Any) -> dict[str, Any]:
        """The first event (seen already or coming) named ``event`` with ``match``."""
        def hit(record: dict[str, Any]) -> bool:
            return record["event"] == event and all(record.get(k) == v
                                                    for k, v in match.items())
        for record in self.seen:
            if hit(record):
                return record
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break  # the process exited
            record = json.loads(line)
            self.seen.append(record)
            if "error" in record and record["event"] in ("connect", "open", "finish", "echo"):
                raise AssertionError(f"{self.name}: {record}\n{self.stderr()}")
            if hit(record):
                return record
        raise AssertionError(f"{self.name}: no {event} {match} within {timeout}s; seen "
                             f"{[r['event'] for r in self.seen]}\n{self.stderr()}")

    def named(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.seen if r["event"] == event]

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # stdout: the reader thread reads it to its end


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[MoveNode] = []

    def start(site: Site, name: str) -> MoveNode:
        node = MoveNode(site, tmp_path, name)
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()


def move(site: Site) -> str:
    """Change the site host's address in its namespace; the new one."""
    if site.nat:
        a, b, c, _ = site.host_ip.split(".")
        new, gateway = f"{a}.{b}.{c}.3", f"{a}.{b}.{c}.1"
        route = f" && ip route add default via {gateway}"
    else:
        last = int(site.host_ip.rsplit(".", 1)[1])
        new, route = f"203.0.113.{last + 100}", ""
    _sh("ip", "netns", "exec", site.host_ns, "sh", "-c",
        f"ip addr del {site.host_ip}/24 dev eth0 && ip addr add {new}/24 dev eth0{route}")
    return new


@pytest.mark.parametrize("kind", KINDS)
def test_a_mover_that_dialed_keeps_its_connection_and_stream(lab: Lab, spawn,
                                                             kind: str) -> None:
    peer_site, mover_site = lab.add_site("none"), lab.add_site(kind)
    peer, mover = spawn(peer_site, "peer"), spawn(mover_site, "mover")
    p = peer.wait("ready")
    m = mover.wait("ready")
    mover.send("connect", p["addrs"][0])
    mover.wait("connect")
    mover.send("open", p["peer_id"])
    mover.wait("open")
    start = time.monotonic()
    new_ip = move(mover_site)
    changed = mover.wait("address.changed")
    ours = mover.wait("connection.migrated", role="client")
    theirs = peer.wait("connection.migrated", role="server")
    took = time.monotonic() - start
    public = new_ip if kind == "none" else mover_site.public_ip
    assert theirs["address"].split(":")[0] == public, theirs
    assert theirs["address"] != theirs["old_address"], theirs
    mover.send("finish")
    assert mover.wait("finish")["ok"], "bytes lost across the move"
    mover.send("echo", p["peer_id"])
    assert mover.wait("echo")["ok"]
    peer.wait("announce.received", result="valid", peer_id=m["peer_id"])
    assert not mover.named("connection.replaced") and not peer.named("connection.replaced")
    print(f"\n{kind}: {changed['old']} -> {changed['new']}; migrated "
          f"{theirs['old_address']} -> {theirs['address']} {took:.2f} s after the "
          f"address change (peer acknowledged in {ours['elapsed']:.3f} s)")


def test_a_public_mover_that_was_dialed_is_reconnected(lab: Lab, spawn) -> None:
    peer_site, mover_site = lab.add_site("none"), lab.add_site("none")
    peer, mover = spawn(peer_site, "peer"), spawn(mover_site, "mover")
    p = peer.wait("ready")
    m = mover.wait("ready")
    peer.send("connect", m["addrs"][0], "identify")
    peer.wait("connect")
    peer.wait("dialback.result", role="dialer", ok=True)  # the mover proved our address
    start = time.monotonic()
    new_ip = move(mover_site)
    ours = mover.wait("connection.replaced")
    theirs = peer.wait("connection.replaced")
    took = time.monotonic() - start
    assert ours["cause"] == "server_side", ours
    assert ours["new_path"] == f"direct {peer_site.host_ip}:39001", ours
    assert theirs["cause"] == "peer_moved", theirs
    assert theirs["new_path"] == f"direct {new_ip}:39001", theirs
    peer.send("echo", m["peer_id"])
    assert peer.wait("echo")["path"] == f"direct {new_ip}:39001"
    assert len(mover.named("connection.replaced")) == 1
    assert len(peer.named("connection.replaced")) == 1
    assert p["peer_id"] != m["peer_id"]
    print(f"\nserver side: replaced {took:.2f} s after the address change")
