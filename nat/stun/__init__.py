"""STUN (RFC 8489, RFC 5780): codec wrapper, client transactions, server role."""
