"""Durable state the node keeps in its data directory: the TOFU trust store (and, next to
it, sequence numbers and replay state in ``stack.base.replay``)."""
