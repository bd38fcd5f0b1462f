"""Circuit relay (libp2p circuit relay v2 semantics) for p2pstack.

``wire``     hop/stop messages, status codes, the datagram framing on a circuit
``limits``   the relay's resource table (reservations, circuits, per-circuit limits);
             sans-I/O, time is a parameter
``circuit``  a circuit stream as a ``PathSocket`` (QUIC datagrams framed onto it) and
             the relay's splice of two circuit halves
``client``   reserving on a relay, opening a circuit through it, keeping reservations

Only ``stack.base`` is imported (DESIGN.md section 1); the node's router protocols that
serve ``/p2pstack/relay/hop/1`` and ``/p2pstack/relay/stop/1`` are in
``stack.node.protocols.relay``.
"""
