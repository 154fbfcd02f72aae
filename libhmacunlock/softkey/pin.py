"""clientPIN (CTAP 2.1 §6.5): the PIN, its retry counters, key agreement and pinUvAuthTokens.

Persistent: the PIN hash and the retry counter (in KeyState; the counter is decremented and saved BEFORE the PIN is
compared, so cutting the power cannot buy a free guess). Volatile (lost at power-up): the key-agreement keys, the
token, and the count of consecutive mismatches behind the 3-in-a-row soft lock.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, TypeVar

from . import profiles
from .errors import ERR, CtapFailure
from .fields import ClientPinParam, ClientPinResult
from .pin_protocol import PinProtocol, PinProtocol2
from .state import PIN_RETRIES_MAX, KeyState
from .wire import Params

VerifyUser = Callable[[], None]  # the built-in UV ("the finger"): returns when it matched, raises CtapFailure

_T = TypeVar("_T")

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


# each subcommand's name as in the CTAP 2.1 specification (the two token ones shortened: the spec's end in
# "WithPermissions"), for the tests and the benchmark's report; the commands': authenticator.COMMAND_NAMES
SUBCOMMAND_NAMES: dict[int, str] = {
    Sub.GET_PIN_RETRIES: "getPinRetries",
    Sub.GET_KEY_AGREEMENT: "getKeyAgreement",
    Sub.SET_PIN: "setPIN",
    Sub.CHANGE_PIN: "changePIN",
    Sub.GET_PIN_TOKEN: "getPinToken",
    Sub.GET_TOKEN_USING_UV: "getPinUvAuthTokenUsingUv",
    Sub.GET_UV_RETRIES: "getUVRetries",
    Sub.GET_TOKEN_USING_PIN: "getPinUvAuthTokenUsingPin",
}


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
    def __init__(self, state: KeyState, profile: profiles.Profile | None = None) -> None:
        self.state = state
        self.profile = profiles.get(profile)
        known: dict[int, type[PinProtocol]] = {1: PinProtocol, 2: PinProtocol2}
        self.protocols: dict[int, PinProtocol] = {v: known[v]() for v in self.profile.pin_protocols if v in known}
        self.token: PinToken | None = None
        self.mismatches = 0
        self.sub_counts: collections.Counter[int] = collections.Counter()  # clientPIN subcommands asked (tests, bench)
        # built-in UV attempts left; in RAM (a real key keeps them across power-off; reset by a match or the PIN)
        self.uv_retries = self.profile.uv_retries

    # --- lifecycle -----------------------------------------------------------------------------------------

    def power_cycle(self) -> None:
        for proto in self.protocols.values():
            proto.regenerate()
        self.token = None
        self.mismatches = 0

    @property
    def pin_set(self) -> bool:
        return self.state.pin_hash is not None

    @property
    def uv_configured(self) -> bool:
        """A fingerprint is enrolled. A bio key enrolls one only once it has a PIN; the profile's finger (the
        presence policy) comes with the PIN."""
        return self.profile.builtin_uv and self.pin_set

    def protocol(self, version: int | None) -> PinProtocol:
        if version is None:
            raise CtapFailure(ERR.MISSING_PARAMETER)
        proto = self.protocols.get(version)
        if proto is None:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        return proto

    # --- the command ---------------------------------------------------------------------------------------

    def handle(self, p: Params, verify_user: VerifyUser | None = None) -> dict[int, Any]:
        """One clientPIN request; `verify_user` is the built-in UV (keys with a fingerprint reader)."""
        version = p.uint(ClientPinParam.PIN_UV_AUTH_PROTOCOL)
        sub = p.uint(ClientPinParam.SUB_COMMAND, required=True)
        self.sub_counts[sub] += 1
        key_agreement = p.raw_map(ClientPinParam.KEY_AGREEMENT)
        param = p.bytes(ClientPinParam.PIN_UV_AUTH_PARAM)
        new_pin_enc = p.bytes(ClientPinParam.NEW_PIN_ENC)
        pin_hash_enc = p.bytes(ClientPinParam.PIN_HASH_ENC)
        permissions = p.uint(ClientPinParam.PERMISSIONS)
        rp_id = p.text(ClientPinParam.RP_ID)
        if sub not in self._subcommands():
            raise CtapFailure(ERR.INVALID_SUBCOMMAND)
        if sub == Sub.GET_PIN_RETRIES:
            if not self.pin_set:  # what real keys answer (python-fido2's device tests on YubiKeys expect it)
                raise CtapFailure(ERR.PIN_NOT_SET)
            retries: dict[int, Any] = {ClientPinResult.PIN_RETRIES: self.state.pin_retries}
            if self.profile.ctap21:  # powerCycleState is CTAP 2.1's
                retries[ClientPinResult.POWER_CYCLE_STATE] = self.mismatches >= MISMATCHES_BEFORE_SOFT_LOCK
            return retries
        if sub == Sub.GET_UV_RETRIES:
            return {ClientPinResult.UV_RETRIES: self.uv_retries}
        proto = self.protocol(version)
        if sub == Sub.GET_KEY_AGREEMENT:
            return {ClientPinResult.KEY_AGREEMENT: proto.key_agreement()}
        if sub == Sub.SET_PIN:
            self._set_pin(proto, _need(key_agreement), _need(param), _need(new_pin_enc))
            return {}
        if sub == Sub.CHANGE_PIN:
            self._change_pin(proto, _need(key_agreement), _need(pin_hash_enc), _need(new_pin_enc), _need(param))
            return {}
        if sub == Sub.GET_PIN_TOKEN:
            key_agreement, pin_hash_enc = _need(key_agreement), _need(pin_hash_enc)
            if permissions is not None or rp_id is not None:
                raise CtapFailure(ERR.INVALID_PARAMETER)
            return self._issue(proto, key_agreement, pin_hash_enc, self._legacy_permissions(), None)
        if sub == Sub.GET_TOKEN_USING_UV:
            return self._issue_by_uv(
                proto, _need(key_agreement), self._permissions(_need(permissions)), rp_id, verify_user
            )
        # GET_TOKEN_USING_PIN (every missing parameter is MISSING_PARAMETER, before the permissions are checked)
        return self._issue(
            proto, _need(key_agreement), _need(pin_hash_enc), self._permissions(_need(permissions)), rp_id
        )

    def _subcommands(self) -> set[int]:
        subs: set[int] = {Sub.GET_PIN_RETRIES, Sub.GET_KEY_AGREEMENT, Sub.SET_PIN, Sub.CHANGE_PIN, Sub.GET_PIN_TOKEN}
        if self.profile.pin_uv_auth_token:
            subs.add(Sub.GET_TOKEN_USING_PIN)
        if self.profile.builtin_uv:
            subs |= {Sub.GET_TOKEN_USING_UV, Sub.GET_UV_RETRIES}
        return subs

    def _legacy_permissions(self) -> Permission:
        # CTAP 2.1 §6.5.5.7.1: the legacy token has mc and ga. A CTAP 2.0 / 2.1_PRE key knows no permissions:
        # its pinToken authorises every command it has, credential management (preview) included.
        if self.profile.pin_uv_auth_token:
            return Permission.MC | Permission.GA
        return SUPPORTED_PERMISSIONS

    @staticmethod
    def _permissions(permissions: int) -> Permission:
        if permissions == 0:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        if permissions & ~SUPPORTED_PERMISSIONS:
            raise CtapFailure(ERR.UNAUTHORIZED_PERMISSION)
        return Permission(permissions)

    def _issue_by_uv(
        self,
        proto: PinProtocol,
        key_agreement: dict,
        perms: Permission,
        rp_id: str | None,
        verify_user: VerifyUser | None,
    ) -> dict[int, Any]:
        """getPinUvAuthTokenUsingUvWithPermissions (CTAP 2.1 §6.5.5.7.3): the finger instead of the PIN."""
        shared = proto.decapsulate(key_agreement)
        if verify_user is None:
            raise CtapFailure(ERR.INVALID_SUBCOMMAND)
        if not self.uv_configured:
            raise CtapFailure(ERR.NOT_ALLOWED)
        self.verify_uv(verify_user)
        token = os.urandom(32)
        # a match is a touch too (beginUsingPinUvAuthToken(userIsPresent: true))
        self.token = PinToken(token, proto.VERSION, perms, rp_id, time.monotonic() + TOKEN_LIFETIME, True)
        return {ClientPinResult.PIN_UV_AUTH_TOKEN: proto.encrypt(shared, token)}

    def verify_uv(self, verify_user: VerifyUser) -> None:
        """One built-in UV attempt: UV_BLOCKED once the attempts are spent (only the PIN helps then)."""
        if self.uv_retries == 0:
            raise CtapFailure(ERR.UV_BLOCKED)
        try:
            verify_user()
        except CtapFailure as failure:
            if failure.code != ERR.OPERATION_DENIED:
                raise  # cancelled or timed out: not a mismatch
            self.uv_retries -= 1
            raise CtapFailure(ERR.UV_BLOCKED if self.uv_retries == 0 else ERR.UV_INVALID) from None
        self.uv_retries = self.profile.uv_retries

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
        return {ClientPinResult.PIN_UV_AUTH_TOKEN: proto.encrypt(shared, token)}

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
        self.uv_retries = self.profile.uv_retries  # the PIN unblocks the fingerprint too
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
        if token.rp_id is None and self.profile.pin_uv_auth_token:  # a CTAP 2.0 pinToken is bound to no RP
            token.rp_id = rp_id

    def consume_presence(self, token: PinToken) -> None:
        """After a touch was used under a token: CTAP 2.1 clears its flags and every permission but lbw.
        A CTAP 2.0 pinToken stays good until power-off."""
        if not self.profile.pin_uv_auth_token:
            return
        token.user_present = False
        token.permissions &= Permission.LBW


def _need(value: _T | None) -> _T:
    if value is None:
        raise CtapFailure(ERR.MISSING_PARAMETER)
    return value


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
