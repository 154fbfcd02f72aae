"""clientPIN (CTAP 2.1 §6.5): the PIN, its retry counters, key agreement and pinUvAuthTokens.

Persistent: the PIN hash and the retry counter (in KeyState; the counter is decremented and saved BEFORE the PIN is
compared, so cutting the power cannot buy a free guess). Volatile (lost at power-up): the key-agreement keys, the
token, and the count of consecutive mismatches behind the 3-in-a-row soft lock.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

from .errors import ERR, CtapFailure
from .pin_protocol import PinProtocol, PinProtocol2
from .state import PIN_RETRIES_MAX, KeyState
from .wire import Params

MIN_PIN_LENGTH = 4  # Unicode code points
MAX_PIN_BYTES = 63
MISMATCHES_BEFORE_SOFT_LOCK = 3
TOKEN_LIFETIME = 600.0  # seconds: CTAP 2.1's maximum usage time period (10 minutes)


class Sub(IntEnum):
    GET_PIN_RETRIES = 0x01
    GET_KEY_AGREEMENT = 0x02
    SET_PIN = 0x03
    CHANGE_PIN = 0x04
    GET_PIN_TOKEN = 0x05
    GET_TOKEN_USING_UV = 0x06
    GET_UV_RETRIES = 0x07
    GET_TOKEN_USING_PIN = 0x09


class Permission(IntFlag):
    MC = 0x01
    GA = 0x02
    CM = 0x04
    BE = 0x08
    LBW = 0x10
    ACFG = 0x20
    PCMR = 0x40


SUPPORTED_PERMISSIONS = Permission.MC | Permission.GA | Permission.CM


@dataclass
class PinToken:
    value: bytes = field(repr=False)
    protocol: int
    permissions: Permission
    rp_id: str | None
    expires: float
    user_present: bool = False  # a PIN is not a touch (CTAP 2.1 beginUsingPinUvAuthToken(userIsPresent: false))


class PinService:
    def __init__(self, state: KeyState) -> None:
        self.state = state
        self.protocols: dict[int, PinProtocol] = {1: PinProtocol(), 2: PinProtocol2()}
        self.token: PinToken | None = None
        self.mismatches = 0

    # --- lifecycle -----------------------------------------------------------------------------------------

    def power_cycle(self) -> None:
        for proto in self.protocols.values():
            proto.regenerate()
        self.token = None
        self.mismatches = 0

    @property
    def pin_set(self) -> bool:
        return self.state.pin_hash is not None

    def protocol(self, version: int | None) -> PinProtocol:
        if version is None:
            raise CtapFailure(ERR.MISSING_PARAMETER)
        proto = self.protocols.get(version)
        if proto is None:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        return proto

    # --- the command ---------------------------------------------------------------------------------------

    def handle(self, p: Params) -> dict[int, Any]:
        version = p.uint(0x01)
        sub = p.uint(0x02, required=True)
        key_agreement = p.raw_map(0x03)
        param = p.bytes(0x04)
        new_pin_enc = p.bytes(0x05)
        pin_hash_enc = p.bytes(0x06)
        permissions = p.uint(0x09)
        rp_id = p.text(0x0A)
        if sub == Sub.GET_PIN_RETRIES:
            return {0x03: self.state.pin_retries, 0x04: self.mismatches >= MISMATCHES_BEFORE_SOFT_LOCK}
        if sub not in Sub.__members__.values() or sub in (Sub.GET_TOKEN_USING_UV, Sub.GET_UV_RETRIES):
            raise CtapFailure(ERR.INVALID_SUBCOMMAND)
        proto = self.protocol(version)
        if sub == Sub.GET_KEY_AGREEMENT:
            return {0x01: proto.key_agreement()}
        if sub == Sub.SET_PIN:
            self._set_pin(proto, _need(key_agreement), _need(param), _need(new_pin_enc))
            return {}
        if sub == Sub.CHANGE_PIN:
            self._change_pin(proto, _need(key_agreement), _need(pin_hash_enc), _need(new_pin_enc), _need(param))
            return {}
        if sub == Sub.GET_PIN_TOKEN:
            _need_all(key_agreement, pin_hash_enc)
            if permissions is not None or rp_id is not None:
                raise CtapFailure(ERR.INVALID_PARAMETER)
            return self._issue(proto, key_agreement, pin_hash_enc, Permission.MC | Permission.GA, None)
        # GET_TOKEN_USING_PIN
        _need_all(key_agreement, pin_hash_enc, permissions)
        if permissions == 0:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        if permissions & ~SUPPORTED_PERMISSIONS:
            raise CtapFailure(ERR.UNAUTHORIZED_PERMISSION)
        return self._issue(proto, key_agreement, pin_hash_enc, Permission(permissions), rp_id)

    def _set_pin(self, proto: PinProtocol, key_agreement: dict, param: bytes, new_pin_enc: bytes) -> None:
        if self.pin_set:  # CTAP 2.1 §6.5.5.5: setPIN on a key with a PIN is PIN_AUTH_INVALID (changePIN is the way)
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        shared = proto.decapsulate(key_agreement)
        if not proto.verify(shared, new_pin_enc, param):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        new_hash = _new_pin_hash(proto, shared, new_pin_enc)
        self.state.pin_hash = new_hash
        self.state.pin_retries = PIN_RETRIES_MAX
        self.state.save()

    def _change_pin(
        self, proto: PinProtocol, key_agreement: dict, pin_hash_enc: bytes, new_pin_enc: bytes, param: bytes
    ) -> None:
        self._check_not_locked()
        shared = proto.decapsulate(key_agreement)
        if not proto.verify(shared, new_pin_enc + pin_hash_enc, param):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        _check_pin_hash_enc(proto, pin_hash_enc)
        self._verify_pin(proto, shared, pin_hash_enc)
        new_hash = _new_pin_hash(proto, shared, new_pin_enc)
        self.state.pin_hash = new_hash
        self.state.save()
        self.token = None  # every token issued under the old PIN dies with it

    def _issue(
        self, proto: PinProtocol, key_agreement: dict, pin_hash_enc: bytes, perms: Permission, rp_id: str | None
    ) -> dict[int, Any]:
        self._check_not_locked()
        shared = proto.decapsulate(key_agreement)
        _check_pin_hash_enc(proto, pin_hash_enc)
        self._verify_pin(proto, shared, pin_hash_enc)
        token = os.urandom(32)
        self.token = PinToken(token, proto.VERSION, perms, rp_id, time.monotonic() + TOKEN_LIFETIME)
        return {0x02: proto.encrypt(shared, token)}

    def _check_not_locked(self) -> None:
        if not self.pin_set:
            raise CtapFailure(ERR.PIN_NOT_SET)
        if self.state.pin_retries == 0:
            raise CtapFailure(ERR.PIN_BLOCKED)
        if self.mismatches >= MISMATCHES_BEFORE_SOFT_LOCK:
            raise CtapFailure(ERR.PIN_AUTH_BLOCKED)

    def _verify_pin(self, proto: PinProtocol, shared: bytes, pin_hash_enc: bytes) -> None:
        # decrement and persist first: a power cut after the comparison must not give a free guess
        self.state.pin_retries -= 1
        self.state.save()
        pin_hash = proto.decrypt(shared, pin_hash_enc)
        assert self.state.pin_hash is not None  # noqa: S101 - _check_not_locked ran
        if pin_hash is None or not hmac.compare_digest(pin_hash, self.state.pin_hash):
            proto.regenerate()
            self.mismatches += 1
            if self.state.pin_retries == 0:
                raise CtapFailure(ERR.PIN_BLOCKED)
            if self.mismatches >= MISMATCHES_BEFORE_SOFT_LOCK:
                raise CtapFailure(ERR.PIN_AUTH_BLOCKED)
            raise CtapFailure(ERR.PIN_INVALID)
        self.mismatches = 0
        self.state.pin_retries = PIN_RETRIES_MAX
        self.state.save()

    # --- tokens, as other commands use them -----------------------------------------------------------------

    def check_param(
        self, version: int | None, param: bytes, message: bytes, permission: Permission, rp_id: str | None
    ) -> PinToken:
        """Verify a pinUvAuthParam against the current token; bind the token's RP on first use.
        Every failure is PIN_AUTH_INVALID, as CTAP 2.1 says."""
        proto = self.protocol(version)
        token = self.token
        if token is None or time.monotonic() > token.expires:
            self.token = None
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        if token.protocol != proto.VERSION or not proto.verify(token.value, message, param):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        if not token.permissions & permission:
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        if rp_id is not None and token.rp_id is not None and token.rp_id != rp_id:
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        return token

    def bind_rp(self, token: PinToken, rp_id: str) -> None:
        if token.rp_id is None:
            token.rp_id = rp_id

    def consume_presence(self, token: PinToken) -> None:
        """After a touch was used under a token: CTAP 2.1 clears its flags and every permission but lbw."""
        token.user_present = False
        token.permissions &= Permission.LBW


def _need(value: Any) -> Any:
    if value is None:
        raise CtapFailure(ERR.MISSING_PARAMETER)
    return value


def _need_all(*values: Any) -> None:
    for value in values:
        _need(value)


def _check_pin_hash_enc(proto: PinProtocol, pin_hash_enc: bytes) -> None:
    # a malformed pinHashEnc is refused before the retry counter is touched
    if len(pin_hash_enc) != proto.ciphertext_len(16):
        raise CtapFailure(ERR.INVALID_PARAMETER)


def _new_pin_hash(proto: PinProtocol, shared: bytes, new_pin_enc: bytes) -> bytes:
    """Decrypt a padded PIN block (64 bytes; longer multiples of 16 accepted) and apply the PIN policy."""
    padded = proto.decrypt(shared, new_pin_enc)
    if padded is None or len(padded) < 64 or len(padded) > 256:
        raise CtapFailure(ERR.INVALID_PARAMETER)
    pin = padded.rstrip(b"\0")
    if len(pin) > MAX_PIN_BYTES:
        raise CtapFailure(ERR.PIN_POLICY_VIOLATION)
    try:
        code_points = len(pin.decode("utf-8"))
    except UnicodeDecodeError:
        raise CtapFailure(ERR.PIN_POLICY_VIOLATION) from None
    if code_points < MIN_PIN_LENGTH:
        raise CtapFailure(ERR.PIN_POLICY_VIOLATION)
    return hashlib.sha256(pin).digest()[:16]
