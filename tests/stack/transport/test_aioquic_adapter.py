"""The aioquic adapter: the private fields it reads exist on the pinned aioquic, do what
it assumes, and no other module reaches into aioquic.

When an aioquic upgrade breaks one of these, the failure names the field; fix
``stack/transport/aioquic_adapter.py`` (and only it), then move the pin.
"""

from __future__ import annotations

import ast
import ssl
import time
import tomllib
from pathlib import Path

import aioquic
import pytest
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives.serialization import Encoding

from stack.base.identity import Identity
from stack.transport import aioquic_adapter
from stack.transport.aioquic_adapter import (AIOQUIC_VERSION, PRIVATE_FIELDS,
                                             FlowControlledQuicConnection,
                                             amplification_budget,
                                             ServerQuicConnection, grant_stream_credit,
                                             host_cids, is_first_flight,
                                             peer_certificate, pending_close_event,
                                             unacked_bytes)
from stack.transport.certs import CertifiedKey, make_certificate
from stack.transport.options import ALPN

ROOT = Path(__file__).resolve().parents[3]
NOW = 1000.0
CLIENT, SERVER = ("10.0.0.1", 1), ("10.0.0.2", 2)


def _config(is_client: bool, certified: CertifiedKey, **kwargs) -> QuicConfiguration:
    return QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN],
                             verify_mode=ssl.CERT_NONE, certificate=certified.certificate,
                             private_key=certified.private_key, **kwargs)


def _server(certified: CertifiedKey, client: QuicConnection,
            cls: type[QuicConnection] = ServerQuicConnection, **kwargs) -> QuicConnection:
    """A server for ``client``'s first Initial, keyed by its destination connection id as
    the driver's ``_accept`` does."""
    initial = client.datagrams_to_send(now=NOW)[0][0]
    server = cls(configuration=_config(False, certified, **kwargs),
                 original_destination_connection_id=initial[6:6 + initial[5]])
    server.receive_datagram(initial, CLIENT, now=NOW)
    return server


def _exchange(client: QuicConnection, server: QuicConnection) -> None:
    """Move datagrams both ways, in memory, until neither side has any to send."""
    for _ in range(20):
        moved = False
        for data, _ in client.datagrams_to_send(now=NOW):
            server.receive_datagram(data, CLIENT, now=NOW)
            moved = True
        for data, _ in server.datagrams_to_send(now=NOW):
            client.receive_datagram(data, SERVER, now=NOW)
            moved = True
        if not moved:
            return
    raise AssertionError("the in-memory handshake did not settle")


@pytest.fixture(scope="module")
def handshake():
    """A client and a ``ServerQuicConnection`` after a complete in-memory handshake, with
    the certificates each presented."""
    client_cert = make_certificate(Identity.generate(), time.time())
    server_cert = make_certificate(Identity.generate(), time.time())
    client = QuicConnection(configuration=_config(True, client_cert))
    client.connect(SERVER, now=NOW)
    server = _server(server_cert, client)
    _exchange(client, server)
    completed = []
    for quic in (client, server):
        while (event := quic.next_event()) is not None:
            completed += [quic] if isinstance(event, events.HandshakeCompleted) else []
    assert completed == [client, server], "the in-memory handshake did not complete"
    return client, server, client_cert, server_cert


def test_pyproject_pins_the_aioquic_the_adapter_was_written_for() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if d.replace(" ", "").startswith("aioquic")]
    assert pins == [f"aioquic=={AIOQUIC_VERSION}"], (
        f"pyproject.toml pins {pins}, the adapter was checked against aioquic=="
        f"{AIOQUIC_VERSION}: re-check stack/transport/aioquic_adapter.py, then move both")
    assert aioquic.__version__ == AIOQUIC_VERSION, (
        f"installed aioquic {aioquic.__version__}, adapter written for {AIOQUIC_VERSION}")


@pytest.mark.parametrize("field", PRIVATE_FIELDS)
def test_private_field_exists(field: str, handshake) -> None:
    client, *_ = handshake
    client.send_stream_data(0, b"x")
    stream = getattr(client, "_streams", {}).get(0)  # its absence fails as _streams
    paths = getattr(client, "_network_paths", [])  # its absence fails as _network_paths
    owners = {
        "QuicConnection": client,
        "tls.Context": client.tls,
        "QuicStream": stream,
        "QuicStreamSender": None if stream is None else stream.sender,
        "QuicStreamReceiver": None if stream is None else stream.receiver,
        "QuicNetworkPath": paths[0] if paths else None,
    }
    owner, name = field.rsplit(".", 1)
    assert owner in owners, f"PRIVATE_FIELDS names an owner the test does not know: {field}"
    assert owners[owner] is not None and hasattr(owners[owner], name), (
        f"aioquic {aioquic.__version__} has no {field}; "
        "stack/transport/aioquic_adapter.py relies on it")


def test_server_requests_and_both_sides_keep_the_peer_certificate(handshake) -> None:
    """The request flag still makes aioquic demand a client certificate, and the
    certificate each side presented is the one the other keeps."""
    client, server, client_cert, server_cert = handshake
    for quic, presented in ((client, server_cert), (server, client_cert)):
        cert = peer_certificate(quic)
        assert cert is not None, "aioquic kept no peer certificate"
        assert cert.public_bytes(Encoding.DER) == presented.der


def test_connection_ids_first_flight_unacked_bytes_and_close_event(handshake) -> None:
    client, server, client_cert, server_cert = handshake
    cids = host_cids(client)
    assert cids and all(isinstance(c, bytes) for c in cids)
    assert not is_first_flight(server)
    fresh = ServerQuicConnection(configuration=_config(False, server_cert),
                                 original_destination_connection_id=b"\x01" * 8)
    assert is_first_flight(fresh)

    client.send_stream_data(4, b"y" * 100)
    assert unacked_bytes(client, 4) == 100
    assert unacked_bytes(client, 400) == 0  # a stream aioquic does not know

    fresh = QuicConnection(configuration=_config(True, client_cert))
    fresh.connect(SERVER, now=NOW)
    assert pending_close_event(fresh) is None
    fresh.close(error_code=0, reason_phrase="bye")
    event = pending_close_event(fresh)
    assert isinstance(event, events.ConnectionTerminated) and event.reason_phrase == "bye"


def test_amplification_budget_is_three_times_what_arrived_until_the_handshake() -> None:
    """A server that heard one Initial may send three times its size, aioquic's own
    packets stay within that (but its CONNECTION_CLOSE does not, which is why the driver
    reads the budget), and a Handshake packet from the client lifts the limit."""
    client_cert = make_certificate(Identity.generate(), time.time())
    server_cert = make_certificate(Identity.generate(), time.time())
    client = QuicConnection(configuration=_config(True, client_cert))
    client.connect(SERVER, now=NOW)
    assert amplification_budget(client) is None  # the client chose the address
    initial = client.datagrams_to_send(now=NOW)[0][0]
    server = ServerQuicConnection(configuration=_config(False, server_cert),
                                  original_destination_connection_id=initial[6:6 + initial[5]])
    assert amplification_budget(server) == 0
    server.receive_datagram(initial, CLIENT, now=NOW)
    assert amplification_budget(server) == 3 * len(initial)
    flight = server.datagrams_to_send(now=NOW)
    sent = sum(len(d) for d, _ in flight)
    assert 0 < sent <= 3 * len(initial)
    assert amplification_budget(server) == 3 * len(initial) - sent
    server.close(error_code=0, reason_phrase="x" * 100)
    closing = sum(len(d) for d, _ in server.datagrams_to_send(now=NOW))
    assert closing > 0 and amplification_budget(server) == 3 * len(initial) - sent - closing
    fresh = ServerQuicConnection(configuration=_config(False, server_cert),
                                 original_destination_connection_id=initial[6:6 + initial[5]])
    _exchange(client, _with_first(fresh, initial))
    assert amplification_budget(fresh) is None


def _with_first(server: QuicConnection, initial: bytes) -> QuicConnection:
    server.receive_datagram(initial, CLIENT, now=NOW)
    return server


WINDOW = 4096


def _received(quic: QuicConnection) -> int:
    """Stream bytes ``quic`` delivered as events (the events are consumed)."""
    n = 0
    while (event := quic.next_event()) is not None:
        if isinstance(event, events.StreamDataReceived):
            n += len(event.data)
    return n


def _pump(client: QuicConnection, server: QuicConnection, now: list[float]) -> None:
    """Move datagrams both ways with the clock advancing (aioquic paces its sends, so a
    frozen clock sends nothing after the handshake) and timers run, until the two have
    been quiet for a while; ``now`` is the shared clock, advanced in place."""
    quiet = 0
    for _ in range(2000):
        now[0] += 0.002
        moved = False
        for quic in (client, server):
            timer = quic.get_timer()
            if timer is not None and timer <= now[0]:
                quic.handle_timer(now[0])
        for src, dst, addr in ((client, server, CLIENT), (server, client, SERVER)):
            for data, _ in src.datagrams_to_send(now=now[0]):
                dst.receive_datagram(data, addr, now=now[0])
                moved = True
        quiet = 0 if moved else quiet + 1
        if quiet >= 50:
            return
    raise AssertionError("the in-memory connection did not settle")


def _flow_pair(server_cls: type[QuicConnection]) -> tuple[QuicConnection, QuicConnection]:
    """A client and a server of ``server_cls`` (receive window ``WINDOW`` per stream),
    handshake done."""
    client = FlowControlledQuicConnection(
        configuration=_config(True, make_certificate(Identity.generate(), time.time())))
    client.connect(SERVER, now=NOW)
    server = _server(make_certificate(Identity.generate(), time.time()), client,
                     cls=server_cls, max_stream_data=WINDOW)
    _exchange(client, server)
    _received(client), _received(server)
    return client, server


def test_aioquic_alone_grants_stream_credit_on_receipt() -> None:
    """The control for the test below: a plain aioquic receiver raises MAX_STREAM_DATA
    as data arrives, with nobody reading. If this stops holding, aioquic changed how it
    grants credit: re-check FlowControlledQuicConnection."""
    client, server = _flow_pair(_PlainServer)
    client.send_stream_data(0, b"z" * (4 * WINDOW))
    _pump(client, server, [NOW])
    assert _received(server) == 4 * WINDOW  # far past the initial window, none of it read


def test_stream_credit_comes_only_from_grants() -> None:
    """FlowControlledQuicConnection grants no stream credit on receipt: the sender stops
    at the window until ``grant_stream_credit`` raises it, and then at the new limit."""
    client, server = _flow_pair(ServerQuicConnection)
    now = [NOW]
    client.send_stream_data(0, b"z" * (4 * WINDOW))
    _pump(client, server, now)
    assert _received(server) == WINDOW   # held at the window, though all of it arrived
    assert unacked_bytes(client, 0) == 3 * WINDOW

    assert not grant_stream_credit(server, 0, WINDOW)          # not a raise
    assert not grant_stream_credit(server, 0, WINDOW + 10, 100)  # a step below min_step
    assert not grant_stream_credit(server, 400, 10 * WINDOW)   # a stream aioquic lacks
    assert grant_stream_credit(server, 0, 2 * WINDOW)
    _pump(client, server, now)
    assert _received(server) == WINDOW   # exactly the granted bytes, no more

    client.send_stream_data(0, b"", end_stream=True)
    assert grant_stream_credit(server, 0, 5 * WINDOW)
    _pump(client, server, now)
    assert _received(server) == 2 * WINDOW  # the rest, and the FIN
    assert not grant_stream_credit(server, 0, 10 * WINDOW)  # final size known: no credit


class _PlainServer(QuicConnection):
    """aioquic's own server connection, the way ServerQuicConnection asks for a client
    certificate but without the flow-control hook."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._request_client_certificate = True


def _private_aioquic_accesses(path: Path) -> list[str]:
    """``x.quic._name`` / ``quic._name`` / ``tls._name`` / ``sender._name`` accesses, and
    any access to a field the adapter lists, in one module."""
    listed = {f.rsplit(".", 1)[1] for f in PRIVATE_FIELDS}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        base = node.value
        base_name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if base_name in ("quic", "tls", "sender") or node.attr in listed:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    return found


def test_no_other_module_touches_aioquic_privates() -> None:
    """Every module that imports aioquic, except the adapter and this test, reads it
    only through its public API or the adapter."""
    adapter = Path(aioquic_adapter.__file__).resolve()
    offenders = []
    for folder in ("stack", "discovery", "nat", "simulations", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.resolve() in (adapter, Path(__file__).resolve()):
                continue
            text = path.read_text()
            if "import aioquic" in text or "from aioquic" in text:
                offenders += _private_aioquic_accesses(path)
    assert not offenders, f"aioquic privates outside aioquic_adapter.py: {offenders}"
