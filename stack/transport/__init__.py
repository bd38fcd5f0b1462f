"""Secure transports: QUIC on the shared UDP port and TLS 1.3 over TCP (DESIGN.md 2-5).

Public surface (import from the submodules):

- ``certs``: ``make_certificate(identity, now) -> CertifiedKey``,
  ``verify_certificate(der, now) -> PeerId`` (raises ``InvalidCertificate``),
  ``CertificateVerifier`` (the same, memoised per certificate)
- ``mux``: the stream framing TLS connections use
- ``quic``: ``QuicTransport`` (a ``Receiver`` for ``PortDemux.register_quic``), ``QuicConn``
- ``tls``: ``TlsTransport`` (listen / dial over TCP), ``TlsConn``
- ``streams``: ``Stream`` and the ``Connection`` protocol both transports implement
- ``options``: ``TransportOptions``, ``ConnectionLimits``, ``Registry``, ``ALPN``
- ``multiaddr``: ``PeerAddress``, ``parse_address``
- ``errors``: the named errors
"""
