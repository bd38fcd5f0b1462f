"""Interop (DESIGN.md section 7, tier 6): our client and detection against coturn, an RFC
5780 server we did not write, on loopback (127.0.0.1 + 127.0.0.2, two ports). Skipped with
the reason when coturn is not installed. No root needed; coturn is always killed."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nat.detect import detect_on
from nat.stun.transaction import BindingSuccess, RetransmitConfig, StunClient
from stack.base.clock import SystemClock
from stack.base.net import UdpNetwork

pytestmark = pytest.mark.skipif(shutil.which("turnserver") is None,
                                reason="coturn (turnserver) is not installed")


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = random.Random().randrange(30000, 60000, 2)
    argv = ["turnserver", "-n", "--listening-ip", "127.0.0.1", "--listening-ip", "127.0.0.2",
            "--listening-port", str(port), "--alt-listening-port", str(port + 1),
            "--stun-only", "--no-tls", "--no-dtls", "--no-tcp", "--no-cli",
            "--relay-threads", "1", "--log-file", str(tmp_path / "turn.log"),
            "--simple-log", "--no-stdout-log", "--pidfile", str(tmp_path / "turn.pid"),
            "--db", str(tmp_path / "turndb")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield ("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait()


async def ask(server: tuple[str, int]) -> BindingSuccess:
    """One Binding transaction; its retransmissions also wait out coturn's start-up."""
    client = StunClient(RetransmitConfig(rto=0.1, rc=7, rm=16))
    clock = SystemClock()
    events: asyncio.Queue = asyncio.Queue()

    def receive(batch):
        for data, addr in batch:
            client.receive(data, addr, clock.now())
        while (event := client.next_event()) is not None:
            events.put_nowait(event)

    endpoint = await UdpNetwork().bind(("127.0.0.1", 0), receive)
    try:
        client.request(server, clock.now())
        while True:
            for data, dest in client.outgoing():
                endpoint.send(data, dest)
            deadline = client.next_timer()
            try:
                event = await asyncio.wait_for(
                    events.get(), None if deadline is None else max(0, deadline - clock.now()))
            except TimeoutError:
                client.handle_timer(clock.now())
                while (event := client.next_event()) is not None:
                    events.put_nowait(event)
                continue
            assert isinstance(event, BindingSuccess), event
            assert event.mapped_address == endpoint.local_address
            return event
    finally:
        endpoint.close()


async def test_coturn_answers_our_binding_request_with_rfc5780_attributes(coturn) -> None:
    event = await asyncio.wait_for(ask(coturn), 20)
    assert event.other_address == ("127.0.0.2", coturn[1] + 1)
    assert event.response_origin == coturn


async def test_detection_against_coturn_on_loopback_is_open(coturn) -> None:
    await asyncio.wait_for(ask(coturn), 20)  # coturn is up
    report = await detect_on(UdpNetwork(), ("127.0.0.1", 0), [coturn], SystemClock(),
                             config=RetransmitConfig(timeout=2.0))
    assert report.to_json() | {"public_address": None} == {
        "public_address": None, "nat": False, "mapping": "endpoint-independent",
        "filtering": "endpoint-independent", "hairpin": None, "type": "open"}
