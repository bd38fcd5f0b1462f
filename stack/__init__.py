"""p2pstack's base package: identity, records, trust, clock and network seams, transports.

This module imports nothing: ``stack.node`` composes ``discovery`` and ``nat``, which
import lower parts of ``stack``, so importing the node here would be a cycle.
Users write ``from stack.node import Node``.
"""

__version__ = "0.1.0"
