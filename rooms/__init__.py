"""p2pstack rooms: private rooms admitted by invite code (issue 13, seed 002). Sans-I/O.

Public surface (import from the submodules; this file imports nothing):

- ``rooms.names``: room names -> 32-byte room ids (the rendezvous key).
- ``rooms.invites``: invite codes (``7-guitar-orbit``), ``InviteBook`` (one use, expiry).
- ``rooms.admission``: the SPAKE2 admission state machines (``NewcomerSession``,
  ``InviterSession``), the signed admission record, ``ReplayGuard``.
- ``rooms.pin``: the PIN challenge of a ``--pin`` invite (what it adds, what it does not).
- ``rooms.record``: a room's signed DHT record (how a room is found without a rendezvous).
- ``rooms.membership``: signed, expiring membership announcements and the rendezvous's
  bounded ``MemberDirectory``.
- ``rooms.errors``: every refusal by name.

Like ``discovery`` and ``nat`` it imports only ``stack.base`` (and crypto libraries): the
node (``stack.node.protocols.rendezvous``) carries its messages.
"""
