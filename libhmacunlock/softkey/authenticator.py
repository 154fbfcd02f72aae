"""`Authenticator`: CTAP2 requests in (command byte + CBOR), status byte + canonical CBOR out.

`process` never raises: whatever arrives, the answer is a status byte. Every request is parsed and checked in full
before the user is asked for a touch and before any persistent state changes, so a malformed request changes
nothing.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.ctap import STATUS

from . import credentials as creds
from . import profiles
from .attestation import packed_statement
from .credman import CredentialManagement
from .errors import ERR, CtapFailure
from .extensions import CredProtect, HmacSecretRequest, MakeCredentialExtensions
from .fields import GetAssertionParam, GetAssertionResult, InfoKey, MakeCredentialParam, MakeCredentialResult
from .pin import Permission, PinService, PinToken
from .presence import PresencePolicy, wait_with_keepalives
from .profiles import CredMgmt, Profile
from .state import KeyState, StoredCredential
from .wire import Params

logger = logging.getLogger(__name__)

MAX_MSG_SIZE = 1200  # what the transport accepts; a profile may announce less or more in getInfo
MAX_CREDS_IN_LIST = 8
MAX_USER_ID_LENGTH = 64
RESET_WINDOW = 10.0  # seconds after power-up in which reset is allowed (CTAP 2.1 §6.6)
NEXT_ASSERTION_TIMEOUT = 30.0

Keepalive = Callable[[STATUS], None]


class Cmd(IntEnum):
    MAKE_CREDENTIAL = 0x01
    GET_ASSERTION = 0x02
    GET_INFO = 0x04
    CLIENT_PIN = 0x06
    RESET = 0x07
    GET_NEXT_ASSERTION = 0x08
    CREDENTIAL_MGMT = 0x0A
    SELECTION = 0x0B
    LARGE_BLOBS = 0x0C  # named only: the software key does not implement it (INVALID_COMMAND)
    CONFIG = 0x0D  # named only, likewise
    CREDENTIAL_MGMT_PRE = 0x41


# each command's name as in the CTAP 2.1 specification: how the tests and the benchmark's report name the messages
# a key was asked (tests/fixtures/library.py asked(), bench/keyside.py); clientPIN's subcommands: pin.SUBCOMMAND_NAMES
COMMAND_NAMES: dict[int, str] = {
    Cmd.MAKE_CREDENTIAL: "makeCredential",
    Cmd.GET_ASSERTION: "getAssertion",
    Cmd.GET_INFO: "getInfo",
    Cmd.CLIENT_PIN: "clientPIN",
    Cmd.RESET: "reset",
    Cmd.GET_NEXT_ASSERTION: "getNextAssertion",
    Cmd.CREDENTIAL_MGMT: "credentialManagement",
    Cmd.SELECTION: "selection",
    Cmd.LARGE_BLOBS: "largeBlobs",
    Cmd.CONFIG: "config",
    Cmd.CREDENTIAL_MGMT_PRE: "credentialManagement(pre)",
}


@dataclass
class _Call:
    """What one request may use: how to reach the user."""

    keepalive: Keepalive | None
    cancel: threading.Event | _EitherEvent | None


class _EitherEvent:
    """Set when either event is: the platform's cancel, or the key being unplugged (power_cycle)."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        self._events = (first, second)

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._events[1].wait(min(left, 0.02))
        return True


@dataclass
class _PendingAssertions:
    """getNextAssertion's context: the remaining credentials and how to answer for them."""

    rp_id: str
    client_data_hash: bytes
    flags: int
    uv: bool
    hmac: HmacSecretRequest | None
    remaining: list[StoredCredential] = field(default_factory=list)
    expires: float = 0.0


class Authenticator:
    """`profile`: which family of real keys to answer as (softkey/profiles.py; a name or a Profile)."""

    def __init__(
        self, state: KeyState, presence: PresencePolicy | None = None, profile: Profile | str | None = None
    ) -> None:
        self.state = state
        self.presence = presence or PresencePolicy.approve()
        self.profile = profiles.get(profile)
        self.pin = PinService(state, self.profile)
        self.credman = CredentialManagement(state, self.pin)
        self.message_counts: collections.Counter[int] = collections.Counter()
        self._pending: _PendingAssertions | None = None
        self._lock = threading.Lock()  # one request at a time, as on a real key
        self._unplugged = threading.Event()  # ends a wait for a touch when power_cycle() comes meanwhile
        self._powered_up = time.monotonic()
        self._handlers = self._handler_table()

    def power_cycle(self) -> None:
        """Unplug and plug back in: drop tokens, key agreement, the 3-in-a-row lock, pending operations.
        A request waiting for a touch is ended (KEEPALIVE_CANCEL), as pulling the key out would."""
        self._unplugged.set()
        try:
            with self._lock:
                self.pin.power_cycle()
                self.credman.clear()
                self._pending = None
                self._powered_up = time.monotonic()
        finally:
            self._unplugged.clear()

    # --- dispatch ------------------------------------------------------------------------------------------

    def process(
        self, request: bytes, *, keepalive: Keepalive | None = None, cancel: threading.Event | None = None
    ) -> bytes:
        """Answer one CTAP2 request. Never raises."""
        with self._lock:
            try:
                either = _EitherEvent(cancel, self._unplugged) if cancel is not None else self._unplugged
                return self._dispatch(bytes(request), _Call(keepalive, either))
            except CtapFailure as failure:
                return bytes([failure.code])
            except Exception:  # a bug or a failed write must not take the key down: answer, and leave a trace
                logger.exception("software key: internal error")
                self._forget_unsaved()
                return bytes([ERR.OTHER])

    def _forget_unsaved(self) -> None:
        """After a failure midway, memory must not hold what the file does not (a credential the RP never got, a
        retry counter that was not written): fall back to the file."""
        try:
            self.state.reload()
        except Exception:
            logger.exception("software key: cannot re-read the state file")

    def _dispatch(self, request: bytes, call: _Call) -> bytes:
        if not request:
            raise CtapFailure(ERR.INVALID_LENGTH)
        cmd, payload = request[0], request[1:]
        self.message_counts[cmd] += 1
        if len(request) > MAX_MSG_SIZE:
            raise CtapFailure(ERR.REQUEST_TOO_LARGE)
        # a pending getNextAssertion / enumeration survives only until the next other command
        if cmd != Cmd.GET_NEXT_ASSERTION:
            self._pending = None
        if cmd not in (Cmd.CREDENTIAL_MGMT, Cmd.CREDENTIAL_MGMT_PRE):
            self.credman.clear()
        handler = self._handlers.get(cmd)
        if handler is None:
            raise CtapFailure(ERR.INVALID_COMMAND)
        latency = self.profile.command_latency(cmd)
        if latency > 0:  # a real key's processing time (the `slow` profile); CTAPHID sends PROCESSING meanwhile
            wait_with_keepalives(latency, call.keepalive, call.cancel, STATUS.PROCESSING)
        params = Params.from_bytes(payload) if payload else None
        result = handler(params, call)
        return b"\x00" + (cbor.encode(result) if result else b"")

    def _handler_table(self) -> dict[int, Callable[[Params | None, _Call], dict | None]]:
        table: dict[int, Callable[[Params | None, _Call], dict | None]] = {
            Cmd.GET_INFO: self._no_params(self._get_info),
            Cmd.MAKE_CREDENTIAL: self._make_credential,
            Cmd.GET_ASSERTION: self._get_assertion,
            Cmd.GET_NEXT_ASSERTION: self._no_params(self._get_next_assertion),
            Cmd.CLIENT_PIN: lambda p, call: self.pin.handle(_need_params(p), lambda: self._finger(call)),
            Cmd.RESET: self._no_params(self._reset),
        }
        if self.profile.cred_mgmt is CredMgmt.FULL:
            table[Cmd.CREDENTIAL_MGMT] = lambda p, call: self.credman.handle(_need_params(p))
        if self.profile.cred_mgmt is not CredMgmt.NONE:
            table[Cmd.CREDENTIAL_MGMT_PRE] = lambda p, call: self.credman.handle(_need_params(p))
        if self.profile.ctap21:  # authenticatorSelection is CTAP 2.1's
            table[Cmd.SELECTION] = self._no_params(self._selection)
        return table

    @staticmethod
    def _no_params(fn: Callable[[_Call], dict | None]) -> Callable[[Params | None, _Call], dict | None]:
        def handler(params: Params | None, call: _Call) -> dict | None:
            if params is not None:  # these commands take no parameters
                raise CtapFailure(ERR.INVALID_LENGTH)
            return fn(call)

        return handler

    def _touch(self, call: _Call, purpose: str) -> None:
        if self.profile.touch_delay > 0:  # the person's hand reaching the key (the `slow` profile)
            wait_with_keepalives(self.profile.touch_delay, call.keepalive, call.cancel)
        self.presence.wait(purpose, call.keepalive, call.cancel)

    def _finger(self, call: _Call) -> None:
        """The built-in UV of a bio profile: the presence policy is the finger (approve = a match)."""
        self._touch(call, "verify your fingerprint")

    def _touch_or_finger(self, call: _Call, purpose: str, builtin_uv: bool, token: PinToken | None) -> None:
        """Collect user presence once: the finger's match already was a touch, and so was a token got by one."""
        if builtin_uv or (token is not None and token.user_present):
            return
        self._touch(call, purpose)

    # --- getInfo -------------------------------------------------------------------------------------------

    def _get_info(self, call: _Call) -> dict[int, Any]:
        prof = self.profile
        info: dict[int, Any] = {
            InfoKey.VERSIONS: list(prof.versions),
            InfoKey.EXTENSIONS: list(prof.extensions),
            InfoKey.AAGUID: self.state.aaguid,
            InfoKey.OPTIONS: prof.options(self.pin.pin_set),
            InfoKey.MAX_MSG_SIZE: prof.max_msg_size,
            InfoKey.PIN_UV_PROTOCOLS: list(prof.pin_protocols),
        }
        if prof.max_creds_in_list is not None:
            info[InfoKey.MAX_CREDS_IN_LIST] = prof.max_creds_in_list
        if prof.max_cred_id_length is not None:
            info[InfoKey.MAX_CRED_ID_LENGTH] = prof.max_cred_id_length
        if prof.ctap21:  # the members CTAP 2.1 added
            info[InfoKey.ALGORITHMS] = [{"alg": -7, "type": "public-key"}]
            info[InfoKey.FORCE_PIN_CHANGE] = False
        if prof.min_pin_length is not None:
            info[InfoKey.MIN_PIN_LENGTH] = prof.min_pin_length
        if prof.firmware_version is not None:
            info[InfoKey.FIRMWARE_VERSION] = prof.firmware_version
        if prof.builtin_uv:
            info[InfoKey.PREFERRED_PLATFORM_UV_ATTEMPTS] = prof.uv_retries
            if prof.uv_modality is not None:
                info[InfoKey.UV_MODALITY] = prof.uv_modality
        if prof.report_remaining_credentials:
            info[InfoKey.REMAINING_DISC_CREDS] = creds.MAX_RESIDENT_CREDENTIALS - len(self.state.credentials)
        return info

    # --- shared by makeCredential and getAssertion -----------------------------------------------------------

    def _probe_touch(self, param: bytes | None, call: _Call) -> None:
        """A zero-length pinUvAuthParam asks "touch me" (platforms use it to pick a key): touch, then answer
        PIN_NOT_SET or PIN_INVALID as CTAP 2.1 §6.1.2 step 1 says."""
        if param is not None and len(param) == 0:
            self._touch(call, "select this key")
            raise CtapFailure(ERR.PIN_INVALID if self.pin.pin_set else ERR.PIN_NOT_SET)

    def _options(self, p: Params, key: int, allowed: tuple[str, ...]) -> dict[str, bool]:
        raw = p.raw_map(key) or {}
        options: dict[str, bool] = {}
        for name, value in raw.items():
            if not isinstance(value, bool):
                raise CtapFailure(ERR.CBOR_UNEXPECTED_TYPE)
            if isinstance(name, str) and name in allowed:
                options[name] = value
        return options

    def _wants_builtin_uv(self, options: dict[str, bool], param: bytes | None) -> bool:
        """uv=true without a pinUvAuthParam asks for the built-in UV (a bio key's finger). Next to a
        pinUvAuthParam it means nothing (CTAP 2.1 treats it as false then). A key without built-in UV refuses it."""
        if not options.get("uv") or param is not None:
            return False
        if not self.pin.uv_configured:
            raise CtapFailure(ERR.INVALID_OPTION if self.profile.ctap21 else ERR.UNSUPPORTED_OPTION)
        return True

    def _next_count(self) -> int:
        self.state.sign_count += 1
        return self.state.sign_count

    def _lookup(self, rp_id: str, credential_id: bytes) -> StoredCredential | None:
        cred = self.state.find_credential(credential_id)
        if cred is not None:
            return cred if cred.rp_id == rp_id else None
        return creds.unwrap(self.state, rp_id, credential_id)

    # --- makeCredential ------------------------------------------------------------------------------------

    def _make_credential(self, p: Params | None, call: _Call) -> dict[int, Any]:
        p = _need_params(p)
        param = p.bytes(MakeCredentialParam.PIN_UV_AUTH_PARAM)
        version = p.uint(MakeCredentialParam.PIN_UV_AUTH_PROTOCOL)
        self._probe_touch(param, call)
        client_data_hash = _client_data_hash(p.bytes(MakeCredentialParam.CLIENT_DATA_HASH, required=True))
        rp = _rp_entity(p.map(MakeCredentialParam.RP, required=True))
        user = _user_entity(p.map(MakeCredentialParam.USER, required=True))
        algs = p.list(MakeCredentialParam.PUB_KEY_CRED_PARAMS, required=True)
        exclude = _descriptors(p.list(MakeCredentialParam.EXCLUDE_LIST))
        ext = MakeCredentialExtensions.parse(p.map(MakeCredentialParam.EXTENSIONS), self.profile.extensions)
        options = self._options(p, MakeCredentialParam.OPTIONS, ("rk", "up", "uv"))
        if p.uint(MakeCredentialParam.ENTERPRISE_ATTESTATION) is not None:
            raise CtapFailure(ERR.INVALID_PARAMETER)  # enterprise attestation: not supported
        _choose_es256(algs)
        builtin_uv = self._wants_builtin_uv(options, param)
        if options.get("up") is False:
            raise CtapFailure(ERR.INVALID_OPTION)
        resident = options.get("rk", False)
        if resident and not self.profile.resident_keys:
            raise CtapFailure(ERR.UNSUPPORTED_OPTION)

        token = self._authorize(param, version, client_data_hash, Permission.MC, rp["id"])
        if (
            token is None
            and not builtin_uv
            and self.pin.pin_set
            and (resident or not self.profile.make_cred_uv_not_rqd)
        ):
            # with makeCredUvNotRqd only non-discoverable credentials may be made without the PIN; without it
            # (CTAP 2.0: PIN_REQUIRED, the same code) none may
            raise CtapFailure(ERR.PUAT_REQUIRED)
        if builtin_uv:
            self.pin.verify_uv(lambda: self._finger(call))
        uv = token is not None or builtin_uv
        for cred_id in exclude:
            found = self._lookup(rp["id"], cred_id)
            if found is not None and (uv or found.cred_protect != CredProtect.UV_REQUIRED):
                self._touch(call, "tell the site this key is registered")
                raise CtapFailure(ERR.CREDENTIAL_EXCLUDED)
        if (
            resident
            and self._replaced(rp["id"], user["id"]) is None
            and (len(self.state.credentials) >= creds.MAX_RESIDENT_CREDENTIALS)
        ):
            raise CtapFailure(ERR.KEY_STORE_FULL)

        self._touch_or_finger(call, f"register with {rp['id']}", builtin_uv, token)
        if token is not None:
            self.pin.bind_rp(token, rp["id"])
            self.pin.consume_presence(token)

        level = ext.cred_protect or CredProtect.UV_OPTIONAL
        if resident:
            cred = creds.new_resident(rp, user, level, ext.hmac_secret, self.state.next_serial)
            old = self._replaced(rp["id"], user["id"])
            if old is not None:
                self.state.credentials.remove(old)
            self.state.credentials.append(cred)
            self.state.next_serial += 1
        else:
            cred = creds.new_wrapped(self.state, rp["id"], level, ext.hmac_secret)
        flags = creds.Flags.UP | (creds.Flags.UV if uv else 0)
        data = creds.auth_data(rp["id"], flags, self._next_count(), (self.state.aaguid, cred), ext.outputs())
        self.state.save()
        return {
            MakeCredentialResult.FMT: "packed",
            MakeCredentialResult.AUTH_DATA: data,
            MakeCredentialResult.ATT_STMT: packed_statement(self.state.attestation, data, client_data_hash),
        }

    def _replaced(self, rp_id: str, user_id: bytes) -> StoredCredential | None:
        for cred in self.state.credentials:
            if cred.rp_id == rp_id and cred.user_id == user_id:
                return cred
        return None

    def _authorize(
        self, param: bytes | None, version: int | None, client_data_hash: bytes, perm: Permission, rp_id: str
    ) -> PinToken | None:
        if param is None:
            return None
        return self.pin.check_param(version, param, client_data_hash, perm, rp_id)

    # --- getAssertion / getNextAssertion --------------------------------------------------------------------

    def _get_assertion(self, p: Params | None, call: _Call) -> dict[int, Any]:
        p = _need_params(p)
        param = p.bytes(GetAssertionParam.PIN_UV_AUTH_PARAM)
        version = p.uint(GetAssertionParam.PIN_UV_AUTH_PROTOCOL)
        self._probe_touch(param, call)
        rp_id = p.text(GetAssertionParam.RP_ID, required=True)
        client_data_hash = _client_data_hash(p.bytes(GetAssertionParam.CLIENT_DATA_HASH, required=True))
        allow = _descriptors(p.list(GetAssertionParam.ALLOW_LIST))
        if len(allow) > MAX_CREDS_IN_LIST:
            raise CtapFailure(ERR.LIMIT_EXCEEDED)
        ext = p.map(GetAssertionParam.EXTENSIONS)
        options = self._options(p, GetAssertionParam.OPTIONS, ("rk", "up", "uv"))
        if "rk" in options:
            raise CtapFailure(ERR.UNSUPPORTED_OPTION)
        builtin_uv = self._wants_builtin_uv(options, param)
        up = options.get("up", True)
        # an extension the key does not have is ignored, as CTAP says
        hmac_request = HmacSecretRequest.parse(ext, self.pin) if self.profile.hmac_secret else None

        token = self._authorize(param, version, client_data_hash, Permission.GA, rp_id)
        if builtin_uv:
            self.pin.verify_uv(lambda: self._finger(call))
        uv = token is not None or builtin_uv
        found = self._applicable(rp_id, allow, uv)
        if not found:
            raise CtapFailure(ERR.NO_CREDENTIALS)
        if up:
            self._touch_or_finger(call, f"sign in to {rp_id}", builtin_uv, token)
        if token is not None:
            self.pin.bind_rp(token, rp_id)
            if up:
                self.pin.consume_presence(token)

        flags = (creds.Flags.UP if up else 0) | (creds.Flags.UV if uv else 0)
        pending = _PendingAssertions(rp_id, client_data_hash, flags, uv, hmac_request)
        response = self._assertion(pending, found[0], discoverable=not allow, total=len(found))
        if not allow and len(found) > 1:
            pending.remaining = found[1:]
            pending.expires = time.monotonic() + NEXT_ASSERTION_TIMEOUT
            self._pending = pending
        return response

    def _applicable(self, rp_id: str, allow: list[bytes], uv: bool) -> list[StoredCredential]:
        """Credentials to answer with, newest first, after credProtect (CTAP 2.1 §12.1)."""
        if allow:
            for cred_id in allow:
                cred = self._lookup(rp_id, cred_id)
                if cred is not None and (uv or cred.cred_protect != CredProtect.UV_REQUIRED):
                    return [cred]  # with an allowList, CTAP 2.1 answers with one credential
            return []
        return [c for c in self.state.credentials_for(rp_id) if uv or c.cred_protect == CredProtect.UV_OPTIONAL]

    def _get_next_assertion(self, call: _Call) -> dict[int, Any]:
        pending = self._pending
        if pending is None or not pending.remaining or time.monotonic() > pending.expires:
            self._pending = None
            raise CtapFailure(ERR.NOT_ALLOWED)
        cred = pending.remaining.pop(0)
        pending.expires = time.monotonic() + NEXT_ASSERTION_TIMEOUT
        return self._assertion(pending, cred, discoverable=True, total=None)

    def _assertion(
        self, pending: _PendingAssertions, cred: StoredCredential, discoverable: bool, total: int | None
    ) -> dict[int, Any]:
        extensions: dict[str, Any] = {}
        if pending.hmac is not None:
            output = pending.hmac.output(cred, pending.uv, self.profile.hmac_secret_uv_split)
            if output is not None:
                extensions["hmac-secret"] = output
        data = creds.auth_data(pending.rp_id, pending.flags, self._next_count(), None, extensions)
        self.state.save()
        signature = cred.key.sign(data + pending.client_data_hash, ec.ECDSA(hashes.SHA256()))
        response: dict[int, Any] = {
            GetAssertionResult.CREDENTIAL: {"id": cred.credential_id, "type": "public-key"},
            GetAssertionResult.AUTH_DATA: data,
            GetAssertionResult.SIGNATURE: signature,
        }
        if cred.resident:
            # names only after user verification, and only when the platform has to choose between accounts
            several = discoverable and (total is None or total > 1)
            response[GetAssertionResult.USER] = cred.user_entity(with_names=pending.uv and several)
        if total is not None and total > 1:
            response[GetAssertionResult.NUMBER_OF_CREDENTIALS] = total
        return response

    # --- reset, selection ----------------------------------------------------------------------------------

    def _reset(self, call: _Call) -> None:
        if time.monotonic() - self._powered_up > RESET_WINDOW:
            raise CtapFailure(ERR.NOT_ALLOWED)
        self._touch(call, "RESET: erase every credential and the PIN")
        self.state.reset()
        self.state.save()
        self.pin.power_cycle()

    def _selection(self, call: _Call) -> None:
        self._touch(call, "select this key")


# --- request field checks ----------------------------------------------------------------------------------------


def _need_params(p: Params | None) -> Params:
    if p is None:
        raise CtapFailure(ERR.MISSING_PARAMETER)
    return p


def _client_data_hash(value: bytes) -> bytes:
    if len(value) != 32:
        raise CtapFailure(ERR.INVALID_LENGTH)
    return value


def _rp_entity(rp: Params) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": rp.text("id", required=True)}
    name = rp.text("name")
    if name is not None:
        entity["name"] = name
    rp.text("icon")  # deprecated, not kept, but type-checked as real keys do
    return entity


def _user_entity(user: Params) -> dict[str, Any]:
    user_id = user.bytes("id", required=True)
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise CtapFailure(ERR.INVALID_LENGTH)
    entity: dict[str, Any] = {"id": user_id}
    for key in ("name", "displayName"):
        value = user.text(key)
        if value is not None:
            entity[key] = value
    user.text("icon")  # deprecated, not kept, but type-checked as real keys do
    return entity


def _choose_es256(algs: list[Any]) -> None:
    found = False
    for item in algs:
        entry = Params(item)
        alg = entry.int("alg", required=True)
        kind = entry.text("type", required=True)
        if kind == "public-key" and alg == -7:
            found = True
    if not found:
        raise CtapFailure(ERR.UNSUPPORTED_ALGORITHM)


def _descriptors(items: list | None) -> list[bytes]:
    """Credential ids of the public-key descriptors in an allowList / excludeList."""
    ids = []
    for item in items or []:
        entry = Params(item)
        cred_id = entry.bytes("id", required=True)
        kind = entry.text("type", required=True)
        if kind == "public-key":
            ids.append(cred_id)
    return ids
