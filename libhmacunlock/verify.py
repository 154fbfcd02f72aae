"""Checks on a key's assertion before its hmac-secret output is trusted (docs/how-it-works.md, Unlock).

The slot's fields (public key, sign count, flags) are authenticated first by the AEAD that wraps the unlock key
(unlock.py unwraps before it calls here), so a record edited to hold an attacker's public key never gets this far.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from enum import Enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256, CoseKey

from .device import HmacAssertion
from .errors import AssertionInvalid, ClonedKey


class ClonePolicy(str, Enum):
    REFUSE = "refuse"
    WARN = "warn"


class PublicKey:
    """A slot's COSE public key parsed once, before the PIN is typed: after it, verify() only checks a signature.

    ES256 (what enroll asks for) becomes a cryptography key object here; any other algorithm keeps python-fido2's
    CoseKey, which builds its key on each verify. parse() raises ValueError, TypeError or KeyError on a malformed key.
    """

    def __init__(self, cose: CoseKey) -> None:
        self.cose = cose
        self._ec: ec.EllipticCurvePublicKey | None = None
        if isinstance(cose, ES256) and cose.get(-1) == 1:
            x, y = cose[-2], cose[-3]
            numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1())
            self._ec = numbers.public_key()

    @classmethod
    def parse(cls, encoded: bytes) -> PublicKey:
        cose = cbor.decode(encoded)
        if not isinstance(cose, Mapping):
            raise TypeError("the enrolled public key is not a COSE map")
        return cls(CoseKey.parse(cose))

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raises InvalidSignature (or ValueError for a key python-fido2 cannot use)."""
        if self._ec is not None:
            self._ec.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            self.cose.verify(message, signature)


def verify_assertion(
    assertion: HmacAssertion,
    *,
    rp_id: str,
    credential_id: bytes,
    public_key: bytes | PublicKey,
    stored_count: int,
    require_up: bool = True,
    require_uv: bool = True,
    clone_policy: ClonePolicy | str = ClonePolicy.REFUSE,
    warn: Callable[[ClonedKey], None] | None = None,
) -> int:
    """Raise AssertionInvalid / ClonedKey unless the assertion is good; return the sign count to store.

    Under ClonePolicy.WARN a counter that went backwards is passed to `warn` (not raised)."""
    data = assertion.auth_data
    if assertion.credential_id != credential_id:
        raise AssertionInvalid("The security key answered with a credential that was not asked for.")
    if data.rp_id_hash != hashlib.sha256(rp_id.encode()).digest():
        raise AssertionInvalid("The security key's answer is for another relying party (rpIdHash mismatch).")
    if require_up and not data.is_user_present():
        raise AssertionInvalid("The security key's answer does not show a touch (UP flag missing).")
    if require_uv and not data.is_user_verified():
        raise AssertionInvalid("The security key's answer does not show the PIN was checked (UV flag missing).")
    try:
        key = public_key if isinstance(public_key, PublicKey) else PublicKey.parse(public_key)
        key.verify(bytes(data) + assertion.client_data_hash, assertion.signature)
    except InvalidSignature:
        raise AssertionInvalid("The security key's signature does not verify with the enrolled public key.") from None
    except (ValueError, TypeError, KeyError):
        raise AssertionInvalid("The enrolled public key or the key's signature is malformed.") from None
    if assertion.output1 is None:
        raise AssertionInvalid("The security key's answer has no (or a malformed) hmac-secret output.")
    return _check_count(stored_count, data.counter, ClonePolicy(clone_policy), warn)


def _check_count(stored: int, seen: int, policy: ClonePolicy, warn: Callable[[ClonedKey], None] | None) -> int:
    # a key without a counter reports 0 forever (CTAP 2.1 §6.1 allows it); anything else must go up
    if stored == 0 and seen == 0:
        return 0
    if seen > stored:
        return seen
    error = ClonedKey(stored, seen)
    if policy is ClonePolicy.WARN:
        if warn:
            warn(error)
        return max(stored, seen)
    raise error
