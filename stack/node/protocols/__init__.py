"""The node's built-in protocols, each a ``ProtocolHandler`` for the router:

==========================  =================================================================
``/p2pstack/identify/1``    ``identify``: dialer -> its identity-exchange envelope (seed 004,
                            with its listen addresses); listener -> its own envelope; then,
                            once the listener has dialed back (``autonat``), a msgpack map
                            ``{"ok": bool|None, "address": str|None, "error": str|None,
                            "observed": str}`` and FIN
``/p2pstack/ping/1``        ``ping``: messages echoed one by one until FIN (RTT)
``/p2pstack/echo/1``        ``echo``: one message, echoed, FIN
``/p2pstack/relay/hop/1``   ``nat.relay.server``: RESERVE / CONNECT, one STATUS answer
                            (``nat.relay.wire``); after CONNECT's OK the stream is a circuit
``/p2pstack/relay/stop/1``  ``relay``: the relay's CONNECT(initiator), our STATUS; after OK a
                            circuit carrying QUIC to us (``QuicTransport.accept_path``)
==========================  =================================================================
"""
