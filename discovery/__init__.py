"""p2pstack discovery: a Kademlia DHT of signed announcements (issue 5).

Public surface (the rest is private to the package):

- ``DhtCore``, ``DhtConfig``: the sans-I/O core (``discovery.core``).
- ``DhtDriver``, ``open_dht``: its asyncio driver on a ``stack.base.net`` endpoint
  (``discovery.driver``): ``bootstrap(addrs)``, ``publish(record)``, ``resolve(peer_id)``,
  ``lookup(key)``, ``set_record_source(fn)``.
- Events (``discovery.events``) and errors (``discovery.errors``).
- ``RecordValidator`` / ``RecordInfo`` (``discovery.records``): the injected record check;
  ``AnnouncementValidator`` (``discovery.announcements``) is the production one.

Import from the submodules (``from discovery.driver import open_dht``); this file imports
nothing, so loading the package costs nothing and creates no cycles.
"""
