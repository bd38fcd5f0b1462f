"""coturn as a TURN server for tests: 127.0.0.1 only, long-term credentials ``user:pass``
in realm ``p2pstack.test``, loopback peers allowed (coturn refuses them by default),
relay ports in a small random range. ``start_coturn`` returns once coturn answers a STUN
Binding (each retransmission waits for the answer; no sleeping). The caller kills it."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD, REALM = "user", "pass", "p2pstack.test"


@dataclass
class Coturn:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def url(self, user: str = USER, password: str = PASSWORD) -> str:
        return f"turn:{user}:{password}@127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_coturn(tmp_path: Path) -> Coturn:
    base = random.Random().randrange(20000, 60000, 100)
    argv = ["turnserver", "-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
            "--listening-port", str(base), "--min-port", str(base + 10),
            "--max-port", str(base + 90), "--lt-cred-mech", "--user", f"{USER}:{PASSWORD}",
            "--realm", REALM, "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-tcp",
            "--no-tcp-relay", "--no-cli", "--relay-threads", "1",
            "--log-file", str(tmp_path / "turn.log"), "--simple-log", "--no-stdout-log",
            "--pidfile", str(tmp_path / "turn.pid"), "--db", str(tmp_path / "turndb")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    server = Coturn(proc, base)
    try:
        _wait_answering(server.address)
    except BaseException:
        server.kill()
        raise
    return server


def _wait_answering(address: tuple[str, int], tries: int = 100) -> None:
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # unconnected: no ICMP
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        for _ in range(tries):
            sock.sendto(request, address)
            try:
                if sock.recv(2048)[8:20] == request[8:20]:
                    return
            except TimeoutError:
                continue
    raise RuntimeError(f"coturn did not answer on {address}")
