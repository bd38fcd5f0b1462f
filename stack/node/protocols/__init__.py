"""The node's built-in protocols, each a ``ProtocolHandler`` for the router:

==========================  =================================================================
``/p2pstack/identify/1``    ``identify``: dialer -> its identity-exchange envelope (seed 004,
                            with its listen addresses); listener -> its own envelope; then,
                            once the listener has dialed back (``autonat``), a msgpack map
                            ``{"ok": bool|None, "address": str|None, "error": str|None,
                            "observed": str}`` and FIN
``/p2pstack/ping/1``        ``ping``: messages echoed one by one until FIN (RTT)
``/p2pstack/echo/1``        ``echo``: one message, echoed, FIN
==========================  =================================================================
"""
