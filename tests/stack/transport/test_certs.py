"""libp2p TLS certificates: spec test vectors (libp2p/specs tls/tls.md) and our own."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from stack.base.identity import Identity, PeerId
from stack.transport.certs import (LIBP2P_EXTENSION_OID, CertificateVerifier, decode_signed_key,
                                   encode_signed_key,
                                   make_certificate, verify_certificate)
from stack.transport.errors import InvalidCertificate

NOW = 1_700_000_000.0

SPEC_ED25519 = bytes.fromhex(
    "308201773082011ea003020102020900f5bd0debaa597f52300a06082a8648ce3d04030230003020170d37"
    "35303130313030303030305a180f34303936303130313030303030305a30003059301306072a8648ce3d02"
    "0106082a8648ce3d030107034200046bf9871220d71dcb3483ecdfcbfcc7c103f8509d0974b3c18ab1f1be"
    "1302d643103a08f7a7722c1b247ba3876fe2c59e26526f479d7718a85202ddbe47562358a37f307d307b06"
    "0a2b0601040183a25a01010101ff046a30680424080112207fda21856709c5ae12fd6e8450623f15f11955"
    "d384212b89f56e7e136d2e17280440aaa6bffabe91b6f30c35e3aa4f94b1188fed96b0ffdd393f4c58c1c0"
    "47854120e674ce64c788406d1c2c4b116581fd7411b309881c3c7f20b46e54c7e6fe7f0f300a06082a8648"
    "ce3d040302034700304402207d1a1dbd2bda235ff2ec87daf006f9b04ba076a5a5530180cd9c2e8f6399e0"
    "9d0220458527178c7e77024601dbb1b256593e9b96d961b96349d1f560114f61a87595")
SPEC_ED25519_PEER = "12D3KooWJRSrypvnpHgc6ZAgyCni4KcSmbV7uGRaMw5LgMKT18fq"

# Spec vector 4: the extension's signature does not match the certificate key.
SPEC_INVALID = bytes.fromhex(
    "308201773082011da003020102020830a73c5d896a1109300a06082a8648ce3d04030230003020170d3735"
    "303130313030303030305a180f34303936303130313030303030305a30003059301306072a8648ce3d0201"
    "06082a8648ce3d03010703420004bbe62df9a7c1c46b7f1f21d556deec5382a36df146fb29c7f1240e60d7"
    "d5328570e3b71d99602b77a65c9b3655f62837f8d66b59f1763b8c9beba3be07778043a37f307d307b060a"
    "2b0601040183a25a01010101ff046a3068042408011220ec8094573afb9728088860864f7bcea2d4fd412f"
    "ef09a8e2d24d482377c20db60440ecabae8354afa2f0af4b8d2ad871e865cb5a7c0c8d3dbdbf42de577f92"
    "461a0ebb0a28703e33581af7d2a4f2270fc37aec6261fcc95f8af08f3f4806581c730a300a06082a8648ce"
    "3d040302034800304502202dfb17a6fa0f94ee0e2e6a3b9fb6e986f311dee27392058016464bd130930a61"
    "022100ba4b937a11c8d3172b81e7cd04aedb79b978c4379c2b5b24d565dd5d67d3cb3c")


def test_spec_vector_ed25519_peer() -> None:
    assert verify_certificate(SPEC_ED25519, NOW) == PeerId.parse(SPEC_ED25519_PEER)


def test_spec_vector_invalid_signature() -> None:
    with pytest.raises(InvalidCertificate, match="signature"):
        verify_certificate(SPEC_INVALID, NOW)


def test_round_trip_and_same_extension_bytes_as_spec_layout() -> None:
    ident = Identity.from_seed(bytes(range(32)))
    ck = make_certificate(ident, NOW)
    assert verify_certificate(ck.der, NOW) == ident.peer_id
    ext = ck.certificate.extensions.get_extension_for_oid(LIBP2P_EXTENSION_OID)
    assert ext.critical
    public_key, signature = decode_signed_key(ext.value.value)
    assert public_key == bytes([8, 1, 0x12, 0x20]) + ident.public_key
    assert len(signature) == 64


def test_signed_key_codec_both_directions() -> None:
    encoded = encode_signed_key(b"k" * 36, b"s" * 200)  # 200 forces a long-form length
    assert encoded[:2] == b"\x30\x81"
    assert decode_signed_key(encoded) == (b"k" * 36, b"s" * 200)
    for bad in (b"", b"\x31\x00", encoded + b"\x00", encoded[:-1], b"\x30\x02\x05\x00"):
        with pytest.raises(InvalidCertificate):
            decode_signed_key(bad)


def test_expired_and_not_yet_valid() -> None:
    ck = make_certificate(Identity.generate(), NOW)
    with pytest.raises(InvalidCertificate, match="not valid at this time"):
        verify_certificate(ck.der, NOW + 400 * 86400)
    with pytest.raises(InvalidCertificate, match="not valid at this time"):
        verify_certificate(ck.der, NOW - 2 * 3600)


def test_garbage_and_missing_extension() -> None:
    with pytest.raises(InvalidCertificate, match="parse"):
        verify_certificate(b"\x30\x03junk", NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    plain = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
             .public_key(key.public_key()).serial_number(1)
             .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=1))
             .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding
    with pytest.raises(InvalidCertificate, match="lacks the libp2p"):
        verify_certificate(plain.public_bytes(Encoding.DER), NOW)


def test_copied_extension_on_another_key_is_rejected() -> None:
    """A MITM copying a victim's SignedKey onto its own certificate key fails."""
    victim = make_certificate(Identity.generate(), NOW)
    ext = victim.certificate.extensions.get_extension_for_oid(LIBP2P_EXTENSION_OID)
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    forged = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
              .public_key(key.public_key()).serial_number(2)
              .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=1))
              .add_extension(ext.value, critical=True).sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding
    with pytest.raises(InvalidCertificate, match="signature"):
        verify_certificate(forged.public_bytes(Encoding.DER), NOW)


def test_verifier_memo_rechecks_validity_and_keeps_no_failures() -> None:
    ident = Identity.generate()
    ck = make_certificate(ident, NOW)
    verifier = CertificateVerifier(capacity=2)
    assert verifier.verify(ck.der, NOW) == ident.peer_id
    assert verifier.verify(ck.der, NOW + 10) == ident.peer_id  # from the memo
    with pytest.raises(InvalidCertificate, match="not valid at this time"):
        verifier.verify(ck.der, NOW + 400 * 86400)
    with pytest.raises(InvalidCertificate):
        verifier.verify(SPEC_INVALID, NOW)
    with pytest.raises(InvalidCertificate):  # still refused: failures are not memoised
        verifier.verify(SPEC_INVALID, NOW)
    for _ in range(3):  # capacity bounds the memo
        verifier.verify(make_certificate(Identity.generate(), NOW).der, NOW)
    assert len(verifier._memo) == 2
