"""Credentials: new key pairs, credential ids, authenticator data.

Discoverable credentials live in KeyState. A non-discoverable credential is kept nowhere: its id carries a random
nonce, its policy bits and a MAC over them and the RP id hash, and its private key and hmac-secret CredRandoms are
re-derived from the key's wrap secret and the nonce. A reset renews the wrap secret, which kills them all.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256

from .state import KeyState, StoredCredential

WRAPPED_ID_VERSION = 0x01
_NONCE = 32
_TAG = 16
WRAPPED_ID_LEN = 1 + _NONCE + 1 + _TAG
RESIDENT_ID_LEN = 32
MAX_RESIDENT_CREDENTIALS = 50  # discoverable credential slots
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class Flags:
    UP = 0x01
    UV = 0x04
    AT = 0x40
    ED = 0x80


def rp_id_hash(rp_id: str) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest()


def new_private_scalar() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_numbers().private_value.to_bytes(32, "big")


def new_resident(
    rp: dict[str, Any], user: dict[str, Any], cred_protect: int, hmac_secret: bool, serial: int
) -> StoredCredential:
    return StoredCredential(
        credential_id=os.urandom(RESIDENT_ID_LEN),
        rp_id=rp["id"],
        rp_name=rp.get("name"),
        user_id=user["id"],
        user_name=user.get("name"),
        user_display_name=user.get("displayName"),
        private_key=new_private_scalar(),
        cred_protect=cred_protect,
        cred_random_uv=os.urandom(32) if hmac_secret else None,
        cred_random_no_uv=os.urandom(32) if hmac_secret else None,
        serial=serial,
    )


def _derive(state: KeyState, label: bytes, data: bytes) -> bytes:
    return hmac.new(state.wrap_secret, label + data, hashlib.sha256).digest()


def new_wrapped(state: KeyState, rp_id: str, cred_protect: int, hmac_secret: bool) -> StoredCredential:
    nonce = os.urandom(_NONCE)
    policy = cred_protect | (0x04 if hmac_secret else 0)
    body = bytes([WRAPPED_ID_VERSION]) + nonce + bytes([policy])
    tag = _derive(state, b"tag", body + rp_id_hash(rp_id))[:_TAG]
    cred = unwrap(state, rp_id, body + tag)
    assert cred is not None  # noqa: S101 - we just made it
    return cred


def unwrap(state: KeyState, rp_id: str, credential_id: bytes) -> StoredCredential | None:
    """The non-discoverable credential behind `credential_id` for this RP, or None if it is not ours."""
    if len(credential_id) != WRAPPED_ID_LEN or credential_id[0] != WRAPPED_ID_VERSION:
        return None
    body, tag = credential_id[:-_TAG], credential_id[-_TAG:]
    expected = _derive(state, b"tag", body + rp_id_hash(rp_id))[:_TAG]
    if not hmac.compare_digest(tag, expected):
        return None
    nonce, policy = body[1 : 1 + _NONCE], body[-1]
    cred_protect = policy & 0x03
    if cred_protect == 0:
        return None
    seed = int.from_bytes(_derive(state, b"key", nonce) + _derive(state, b"key2", nonce), "big")
    scalar = (seed % (_P256_ORDER - 1) + 1).to_bytes(32, "big")
    hmac_secret = bool(policy & 0x04)
    return StoredCredential(
        credential_id=credential_id,
        rp_id=rp_id,
        rp_name=None,
        user_id=b"",
        user_name=None,
        user_display_name=None,
        private_key=scalar,
        cred_protect=cred_protect,
        cred_random_uv=_derive(state, b"cr-uv", nonce) if hmac_secret else None,
        cred_random_no_uv=_derive(state, b"cr-no-uv", nonce) if hmac_secret else None,
        serial=0,
        resident=False,
    )


def public_cose(cred: StoredCredential) -> dict[int, Any]:
    return dict(ES256.from_cryptography_key(cred.key.public_key()))


def auth_data(
    rp_id: str,
    flags: int,
    counter: int,
    attested: tuple[bytes, StoredCredential] | None = None,
    extensions: dict[str, Any] | None = None,
) -> bytes:
    """authenticatorData: rpIdHash | flags | signCount | [attestedCredentialData] | [extensions]."""
    if attested is not None:
        flags |= Flags.AT
    if extensions:
        flags |= Flags.ED
    out = rp_id_hash(rp_id) + struct.pack(">BI", flags, counter & 0xFFFFFFFF)
    if attested is not None:
        aaguid, cred = attested
        cred_id = cred.credential_id
        out += aaguid + struct.pack(">H", len(cred_id)) + cred_id + cbor.encode(public_cose(cred))
    if extensions:
        out += cbor.encode(extensions)
    return out
