"""Durable state the node keeps: the TOFU trust store (``trust``: pure decisions in
``trust_decisions``, storage in ``trust_storage``), our sequence numbers (``sequence``)
and the verifier's replay state (``replay``), each behind a small interface with a file
and an in-memory implementation, bundled as ``stores.Stores``."""
