"""p2pstack simulations package: the real protocol code on a simulated network.

- ``simulations.vtime``: ``run_virtual`` / ``VirtualEventLoop`` (timers jump: an idle
  hour costs no wall time), ``VirtualClock``, ``current_clock``.
- ``simulations.network``: ``SimNetwork`` (seeded latency, jitter, loss), ``SimHost``
  (a ``stack.base.net.DatagramNetwork`` and ``MulticastNetwork``: the hosts behind one
  NAT are a LAN segment, where mDNS runs), ``SimEndpoint``, ``NetStats``.
- ``simulations.nat``: RFC 4787 NAT boxes, ``NAT_KINDS`` shared with the real lab.
- ``simulations.aio``: ``loop.create_datagram_endpoint`` on the simulated network
  (``use_host``), so unchanged asyncio code (e.g. the ``kademlia`` package) runs on it.
- ``simulations.errors``: ``SimulationError`` and friends.
- ``simulations.scenario``: the scenarios of ``p2pstack simulate`` (TOML format, built-ins).
- ``simulations.runner``: ``run_scenario`` - the production DHT on the simulator, measured.
- ``simulations.report``: report.json, report.md and the plots of a run.

Nothing is imported here, so importing one module does not drag in the others.
"""
