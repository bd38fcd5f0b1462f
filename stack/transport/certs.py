"""Identity-bound certificates: the libp2p TLS spec (libp2p/specs tls/tls.md).

A node presents a self-signed X.509 certificate for a fresh ECDSA P-256 key (accepted by
both aioquic and OpenSSL) that carries extension 1.3.6.1.4.1.53594.1.1::

    SignedKey ::= SEQUENCE {
      publicKey OCTET STRING,   -- protobuf PublicKey of the identity key (08 01 12 20 || key)
      signature OCTET STRING    -- identity key's signature over
    }                           --   b"libp2p-tls-handshake:" || DER SubjectPublicKeyInfo

The TLS handshake's CertificateVerify proves possession of the certificate key; the
extension binds that key to the identity. Together they bind the identity to the session.
The same certificate serves QUIC and TLS over TCP.

``make_certificate`` builds one; ``verify_certificate`` checks a peer's DER certificate and
returns its ``PeerId`` or raises ``InvalidCertificate`` with the reason.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier

from stack.base.identity import Identity, PeerId, verify_signature
from stack.transport.errors import InvalidCertificate

__all__ = ["LIBP2P_EXTENSION_OID", "SIGNATURE_PREFIX", "CertifiedKey", "make_certificate",
           "verify_certificate", "CertificateVerifier", "encode_signed_key",
           "decode_signed_key"]

LIBP2P_EXTENSION_OID = ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX = b"libp2p-tls-handshake:"
_ED25519_PROTO_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
VALIDITY_SLACK = datetime.timedelta(hours=1)  # clock skew allowance for not_before
VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate and its private key, in the forms aioquic and ``ssl`` want."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    der: bytes

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())


# --- a minimal DER codec for SEQUENCE { OCTET STRING, OCTET STRING } -------------------

def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(value)) + value


def _der_read(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """Read one TLV with ``tag`` at ``pos``; return (value, next position)."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise InvalidCertificate("SignedKey: unexpected DER tag")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise InvalidCertificate("SignedKey: bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise InvalidCertificate("SignedKey: truncated DER")
    return data[pos:pos + length], pos + length


def encode_signed_key(public_key_proto: bytes, signature: bytes) -> bytes:
    return _der_tlv(0x30, _der_tlv(0x04, public_key_proto) + _der_tlv(0x04, signature))


def decode_signed_key(data: bytes) -> tuple[bytes, bytes]:
    """(publicKey, signature) from a DER SignedKey; ``InvalidCertificate`` if malformed."""
    body, end = _der_read(data, 0, 0x30)
    if end != len(data):
        raise InvalidCertificate("SignedKey: trailing bytes")
    public_key, pos = _der_read(body, 0, 0x04)
    signature, pos = _der_read(body, pos, 0x04)
    if pos != len(body):
        raise InvalidCertificate("SignedKey: trailing bytes in sequence")
    return public_key, signature


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_certificate(identity: Identity, now: float) -> CertifiedKey:
    """A fresh P-256 key and a self-signed certificate binding it to ``identity``.

    ``now`` (Unix seconds) sets the validity window: [now - 1 h, now + 365 days].
    """
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    signed_key = encode_signed_key(_ED25519_PROTO_PREFIX + identity.public_key,
                                   identity.sign(SIGNATURE_PREFIX + spki))
    start = datetime.datetime.fromtimestamp(now, datetime.UTC)
    # The subject/issuer carry nothing the protocol relies on; a readable name helps
    # whoever looks at the certificate with openssl.
    name = x509.Name([x509.NameAttribute(x509.NameOID.SERIAL_NUMBER, str(identity.peer_id))])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - VALIDITY_SLACK)
            .not_valid_after(start + VALIDITY)
            .add_extension(x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, signed_key),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return CertifiedKey(cert, key, cert.public_bytes(serialization.Encoding.DER))


def verify_certificate(der: bytes, now: float) -> PeerId:
    """The peer id a DER certificate proves, per the libp2p TLS spec; else ``InvalidCertificate``.

    Checks: parses; valid at ``now`` (Unix seconds); self-signature; the extension is
    present and well-formed; it holds an Ed25519 key whose signature covers this
    certificate's SubjectPublicKeyInfo. It does not prove possession of the certificate
    key: the TLS handshake (CertificateVerify) does, and callers use this only after it.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise InvalidCertificate(f"certificate does not parse: {exc}") from None
    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise InvalidCertificate("certificate is not valid at this time")
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise InvalidCertificate(f"certificate is not properly self-signed: {exc}") from None
    try:
        ext = cert.extensions.get_extension_for_oid(LIBP2P_EXTENSION_OID)
    except x509.ExtensionNotFound:
        raise InvalidCertificate("certificate lacks the libp2p public key extension") from None
    except ValueError as exc:
        raise InvalidCertificate(f"certificate extensions do not parse: {exc}") from None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    public_key_proto, signature = decode_signed_key(raw)
    if len(public_key_proto) != 36 or not public_key_proto.startswith(_ED25519_PROTO_PREFIX):
        raise InvalidCertificate("extension key is not an Ed25519 libp2p public key")
    public_key = public_key_proto[4:]
    if not verify_signature(public_key, SIGNATURE_PREFIX + _spki(cert), signature):
        raise InvalidCertificate("extension signature does not cover this certificate's key")
    return PeerId.from_public_key(public_key)


class CertificateVerifier:
    """``verify_certificate`` with a bounded memo of certificates already verified.

    Peers reuse their certificate across connections, and the checks (x509 parse, two
    signature verifications) are a deterministic function of the DER bytes, so the
    result is kept per exact DER; only the validity window is re-checked per use. The
    TLS handshake still proves key possession per session. ``capacity`` bounds memory
    (oldest entries go first); failures are not kept.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._memo: dict[bytes, tuple[PeerId, float, float]] = {}

    def verify(self, der: bytes, now: float) -> PeerId:
        hit = self._memo.get(der)
        if hit is None:
            peer_id = verify_certificate(der, now)
            cert = x509.load_der_x509_certificate(der)
            hit = (peer_id, cert.not_valid_before_utc.timestamp(),
                   cert.not_valid_after_utc.timestamp())
            if len(self._memo) >= self.capacity:
                del self._memo[next(iter(self._memo))]
            self._memo[der] = hit
        peer_id, not_before, not_after = hit
        if not not_before <= now <= not_after:
            raise InvalidCertificate("certificate is not valid at this time")
        return peer_id
