"""Extensions: hmac-secret (CTAP 2.1 §12.5) and credProtect (§12.1).

Inputs are parsed and checked before the user is asked for a touch and before any state changes, so a malformed
extension never costs a signature counter step.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from .errors import ERR, CtapFailure
from .fields import HmacSecretInput
from .pin import PinService
from .pin_protocol import PinProtocol
from .profiles import CRED_PROTECT, HMAC_SECRET
from .state import StoredCredential
from .wire import Params

SUPPORTED = [CRED_PROTECT, HMAC_SECRET]


class CredProtect:
    UV_OPTIONAL = 1
    UV_OPTIONAL_WITH_CREDENTIAL_ID_LIST = 2
    UV_REQUIRED = 3


@dataclass(frozen=True)
class MakeCredentialExtensions:
    hmac_secret: bool = False
    cred_protect: int | None = None

    @classmethod
    def parse(cls, ext: Params | None, supported: tuple[str, ...] = tuple(SUPPORTED)) -> MakeCredentialExtensions:
        """Extensions the key does not have are ignored, as CTAP says an authenticator must."""
        if ext is None:
            return cls()
        hmac_secret = (ext.bool(HMAC_SECRET) or False) if HMAC_SECRET in supported else False
        level = ext.uint(CRED_PROTECT) if CRED_PROTECT in supported else None
        if level is not None and level not in (1, 2, 3):
            raise CtapFailure(ERR.INVALID_PARAMETER)
        return cls(hmac_secret, level)

    def outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cred_protect is not None:
            out[CRED_PROTECT] = self.cred_protect
        if self.hmac_secret:
            out[HMAC_SECRET] = True
        return out


@dataclass(frozen=True)
class HmacSecretRequest:
    """A getAssertion hmac-secret input, decrypted: the salts and how to answer."""

    protocol: PinProtocol
    shared: bytes
    salts: tuple[bytes, ...]

    @classmethod
    def parse(cls, ext: Params | None, pin: PinService) -> HmacSecretRequest | None:
        if ext is None or HMAC_SECRET not in ext:
            return None
        inp = ext.map(HMAC_SECRET, required=True)
        key_agreement = inp.raw_map(HmacSecretInput.KEY_AGREEMENT, required=True)
        salt_enc = inp.bytes(HmacSecretInput.SALT_ENC, required=True)
        salt_auth = inp.bytes(HmacSecretInput.SALT_AUTH, required=True)
        version = inp.uint(HmacSecretInput.PIN_UV_AUTH_PROTOCOL)
        proto = pin.protocol(1 if version is None else version)  # absent means protocol 1 (CTAP 2.0 platforms)
        shared = proto.decapsulate(key_agreement)
        if not proto.verify(shared, salt_enc, salt_auth):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        salts = proto.decrypt(shared, salt_enc)
        if salts is None or len(salts) not in (32, 64):
            raise CtapFailure(ERR.INVALID_LENGTH)
        return cls(proto, shared, (salts[:32],) if len(salts) == 32 else (salts[:32], salts[32:]))

    def output(self, cred: StoredCredential, uv: bool, split: bool = True) -> bytes | None:
        """The encrypted output for this credential, or None if it was not made with hmac-secret.
        `split`: CTAP 2.1's two CredRandoms (with and without UV); False: one, whatever the UV (CTAP 2.0 firmware)."""
        secret = cred.cred_random_uv if uv or not split else cred.cred_random_no_uv
        if secret is None:
            return None
        plain = b"".join(hmac.new(secret, salt, hashlib.sha256).digest() for salt in self.salts)
        return self.protocol.encrypt(self.shared, plain)
