"""The attestation chain of a software key and packed attestation statements.

Each software key is its own "vendor": a self-signed CA signs one batch certificate when the key is born, and the
CA's private key is then thrown away (a real vendor keeps it in a vault; nobody needs it here). The batch
certificate follows the FIDO packed attestation requirements, so verifiers that insist on x5c (libfido2's
fido_cred_verify, pamu2fcfg, python-fido2's PackedAttestation) accept it.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .state import Attestation

OID_FIDO_GEN_CE_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
VENDOR = "hmacunlock software key"
_VALIDITY = datetime.timedelta(days=365 * 20)


def new_attestation(aaguid: bytes) -> Attestation:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    batch_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    ca_name = _name("hmacunlock software key CA", ou="Certification Authority")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    batch_cert = (
        _builder(
            _name("Batch " + str(uuid.UUID(bytes=aaguid)), ou="Authenticator Attestation"),
            ca_name,
            batch_key.public_key(),
            now,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        # the extension's value is an OCTET STRING holding the 16-byte AAGUID (FIDO metadata spec)
        .add_extension(x509.UnrecognizedExtension(OID_FIDO_GEN_CE_AAGUID, b"\x04\x10" + aaguid), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Attestation(
        ca_cert=ca_cert.public_bytes(serialization.Encoding.DER),
        batch_cert=batch_cert.public_bytes(serialization.Encoding.DER),
        batch_key=batch_key.private_numbers().private_value.to_bytes(32, "big"),
    )


def packed_statement(att: Attestation, auth_data: bytes, client_data_hash: bytes) -> dict[str, Any]:
    """attStmt of the packed format, basic attestation with the batch certificate in x5c."""
    sig = att.key.sign(auth_data + client_data_hash, ec.ECDSA(hashes.SHA256()))
    return {"alg": -7, "sig": sig, "x5c": [att.batch_cert]}


def _name(cn: str, ou: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, VENDOR),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any, now: datetime.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
