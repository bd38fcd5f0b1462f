"""Hole punching (issue 9 section 3): DCUtR-style coordination, sans-I/O.

``core``  the punch datagrams (punch, reflect request/reply) and their codec, the
          coordination messages exchanged over the relayed connection, and ``Puncher``:
          one attempt's punch packets and the peer-reflexive addresses they reveal
``birthday`` the birthday technique for a port-restricted cone <-> symmetric pair:
          who takes which part, the cone side's random-port probes, the symmetric
          side's 256 sockets and which of them a probe reached

Outside ``nat`` only ``stack.base`` is imported (DESIGN.md section 1); the protocol on
the node's router (``/p2pstack/dcutr/1``) is ``stack.node.protocols.dcutr`` (the
birthday I/O: ``stack.node.protocols.birthday``).
"""
