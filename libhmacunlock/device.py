"""An open security key: getInfo checks, PIN tokens, makeCredential and getAssertion with hmac-secret.

Finding and opening one from a device spec is libhmacunlock.discovery.

This is the only module that speaks CTAP (through python-fido2's Ctap2 and ClientPin). Every CTAP or transport
failure leaves here as a typed error from errors.py, never as a raw exception.

The PIN token and the hmac-secret extension share ONE key agreement: ClientPin does getKeyAgreement internally,
so `RememberingClientPin` keeps the (key agreement, shared secret) it made, and `hmac_assertion` encrypts the
salts with it. An unlock therefore costs exactly three CTAP messages: getKeyAgreement, getPinUvAuthToken,
getAssertion, plus the getInfo an open does unless the caller keeps an InfoCache (keyinfo.py) that knows the key.
`prefetch_key_agreement()` sends the getKeyAgreement early, from a thread, while the PIN prompt is shown and the
person types: the next token uses it (every other use of the key waits for that thread first).
`key_agreement_now()` fetches it in the caller's thread, before the prompt, and says which public key the key sent:
the PIN guard's witness (pinguard.py) compares it with what a cache remembers (`witness()`, `remember_witness()`).

A getInfo answer from the cache is believed only until the key contradicts it: a refusal that may come from a
stale answer (a feature missing, the PIN not set, a command or PIN protocol the key does not take) makes the Key
read getInfo again and, if the answer did come from the cache, retry once. None of these refusals spends a PIN
attempt (the key checks them before it looks at the PIN).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fido2 import cbor
from fido2.ctap import CtapDevice, CtapError
from fido2.ctap2 import Ctap2, Info
from fido2.ctap2.base import AssertionResponse
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocol
from fido2.webauthn import AuthenticatorData, PublicKeyCredentialDescriptor, PublicKeyCredentialType

from .errors import (
    Cancelled,
    CredentialExcluded,
    CredentialNotOnKey,
    HmacUnlockError,
    KeyBusy,
    KeyCommandFailed,
    KeyLacksFeature,
    KeyRemoved,
    PinBlocked,
    PinMalformed,
    PinNotSet,
    PinPolicy,
    PinSoftLocked,
    ResetNotAllowed,
    UserPresenceFailed,
    WrongPin,
)
from .fido2_compat import (
    Agreement,
    RememberingClientPin,
    ctap2_with_info,
    fetch_key_agreement,
    read_info,
    set_info,
    shared_secret,
)
from .keyinfo import WITNESS, InfoCache, Witness, parsed_info

MIN_PIN_CODE_POINTS = 4  # CTAP 2.1: a PIN has at least 4 Unicode code points ...
MAX_PIN_BYTES = 63  # ... and at most 63 bytes of UTF-8
PERMISSION = ClientPin.PERMISSION
ES256: list[Mapping[str, Any]] = [{"type": "public-key", "alg": -7}]
ERR = CtapError.ERR
DEVICE_LOCK_WAIT = 60.0  # seconds a sign-in waits for others on the same key (each may wait for a touch)

# python-fido2 logs "CTAP channel busy, trying again..." as a warning while it retries; with no logging set up,
# Python would print it to stderr, in the middle of a sign-in. The retry is handled; the person needs no word of it.
logging.getLogger("fido2").addHandler(logging.NullHandler())


# --- results --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """The four features hmacunlock needs (docs/keys.md), and the PIN state.

    multiple_accounts_per_rp: getInfo has no flag for it. CTAP 2.0 (§5.1 authenticatorMakeCredential, step 10) and
    2.1 both make a key that stores discoverable credentials keep one per (RP, user handle), so several accounts per
    RP, and overwrite only the same user's: a key with `rk` has it. (Credential management, which lists them, is
    reported apart: Solo 1 firmware before 4.0 stores several accounts per RP and has none.) The usernameless test
    with two accounts runs on every compatible profile of the software key (docs/keys.md).
    """

    resident_key: bool
    client_pin: bool
    hmac_secret: bool
    multiple_accounts_per_rp: bool
    pin_set: bool
    pin_protocols: tuple[int, ...]
    credential_management: bool = False  # credMgmt or credentialMgmtPreview
    builtin_uv: bool = False  # the key verifies the user itself (a fingerprint): getInfo option "uv" present

    NAMES = (
        ("resident_key", "resident keys (discoverable credentials)"),
        ("client_pin", "a client PIN"),
        ("hmac_secret", "the hmac-secret extension"),
        ("multiple_accounts_per_rp", "several accounts per RP"),
    )

    def missing(self) -> list[str]:
        lacking = [text for name, text in self.NAMES if not getattr(self, name)]
        if not set(self.pin_protocols) & {1, 2}:
            lacking.append("PIN/UV auth protocol 1 or 2")
        return lacking

    @property
    def compatible(self) -> bool:
        return not self.missing()

    @property
    def microsoft_compatible(self) -> bool:
        """The four features of Microsoft's 'Microsoft-compatible security key' list, nothing else."""
        return all(getattr(self, name) for name, _ in self.NAMES)

    def as_json(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name, _ in self.NAMES}


@dataclass(frozen=True)
class PinState:
    """getPinRetries: the attempts left, and whether the key must be replugged before it takes a PIN again."""

    attempts_left: int
    power_cycle_required: bool


def check_pin(pin: str) -> str:
    """Refuse, before anything reaches the key, a PIN that no key accepts: each one sent would use an attempt."""
    if not pin:
        raise PinMalformed("No PIN was entered")
    if len(pin) < MIN_PIN_CODE_POINTS:
        raise PinMalformed(f"That PIN is too short (a PIN has at least {MIN_PIN_CODE_POINTS} characters)")
    if len(pin.encode("utf-8", "surrogatepass")) > MAX_PIN_BYTES:
        raise PinMalformed(f"That PIN is too long (a PIN has at most {MAX_PIN_BYTES} bytes)")
    return pin


@dataclass(frozen=True)
class Token:
    """A pinUvAuthToken with the key agreement it came from (reused for hmac-secret: no second agreement)."""

    value: bytes = field(repr=False)
    protocol: PinProtocol
    key_agreement: dict = field(repr=False)
    shared_secret: bytes = field(repr=False)
    permissions: int
    rp_id: str | None
    by_finger: bool = False  # got by the key's built-in UV: the match was the touch, none is asked again
    agreement_id: bytes = field(default=b"", repr=False)  # SHA-256 of the key's key-agreement public key it came from

    def param(self, client_data_hash: bytes) -> dict[str, Any]:
        return {
            "pin_uv_param": self.protocol.authenticate(self.value, client_data_hash),
            "pin_uv_protocol": self.protocol.VERSION,
        }


@dataclass(frozen=True)
class NewCredential:
    credential_id: bytes
    public_key: bytes  # COSE key, CBOR-encoded (what a slot stores)
    aaguid: bytes
    sign_count: int
    user_handle: bytes
    auth_data: AuthenticatorData
    hmac_secret: bool
    cred_protect: int | None


@dataclass(frozen=True)
class HmacAssertion:
    """One getAssertion's answer with the hmac-secret outputs decrypted. Nothing here is verified yet."""

    credential_id: bytes
    auth_data: AuthenticatorData
    signature: bytes
    client_data_hash: bytes
    user_handle: bytes | None
    number_of_credentials: int | None
    output1: bytes | None = field(repr=False)
    output2: bytes | None = field(repr=False, default=None)


@dataclass(frozen=True)
class Account:
    credential_id: bytes
    user_handle: bytes | None


@dataclass(frozen=True)
class ResidentCredential:
    """One discoverable credential as the key's credential management lists it (CTAP 2.1 §6.8.3)."""

    rp_id: str
    credential_id: bytes
    user_handle: bytes
    user_name: str | None
    display_name: str | None
    cred_protect: int | None


@dataclass(frozen=True)
class Capacity:
    """getCredsMetadata: the discoverable credentials on the key, and how many more fit (at most)."""

    existing: int
    remaining: int


# --- the key --------------------------------------------------------------------------------------------------


class Verification:
    """How a flow proves the user to a key, the best way the key offers: its fingerprint where it has one enrolled
    (a bio key), else the PIN; the PIN also when the finger fails or is blocked. The PIN is asked at most once.

    Without a fingerprint the PIN is asked at once, as the flows always did (before the key is spoken to again)."""

    def __init__(
        self,
        key: Key,
        ask_pin: Callable[[], str],
        on_finger: Callable[[], None] | None = None,
        pin_token: Callable[[str, int, str | None], Token] | None = None,
    ) -> None:
        self.key = key
        self._ask_pin = ask_pin
        self._on_finger = on_finger
        self._pin_token = pin_token or key.pin_token  # the unlock flow spends the PIN through the PIN guard
        self._pin: str | None = None
        self.finger = key.fingerprint_ready()
        if not self.finger:
            self._pin = ask_pin()

    def token(self, permissions: int, rp_id: str | None, on_finger: Callable[[], None] | None = None) -> Token:
        """A token for `permissions` at `rp_id`; `on_finger` (default: the one given at creation) tells the person
        to put their finger on the key."""
        if self.finger:
            tell = on_finger or self._on_finger
            if tell is not None:
                tell()
            token = self.key.uv_token(permissions, rp_id)
            if token is not None:
                return token
            self.finger = False  # no match, or blocked: the PIN from now on
        if self._pin is None:
            self._pin = self._ask_pin()
        return self._pin_token(self._pin, permissions, rp_id)


# Refusals that a stale getInfo answer can cause; the key checks each before it looks at a PIN (CTAP 2.1 §6.5.5.7).
_STALE_INFO = (KeyLacksFeature, KeyCommandFailed, PinNotSet)


class Key:
    """An open security key. Use as a context manager or call close().

    With an `info_cache` and the device's `identity`, getInfo comes from the cache when it holds an answer whose
    AAGUID is one of `aaguids` (any, if none are given); `info_cached` says it did, until the key contradicts it.
    """

    def __init__(
        self,
        device: CtapDevice,
        spec: str = "device",
        *,
        info_cache: InfoCache | None = None,
        identity: str | None = None,
        aaguids: set[bytes] | frozenset[bytes] = frozenset(),
    ) -> None:
        self.device = device
        self.spec = spec
        self._lock: Any = None  # locks.FileLock of this device, from the first PIN token to close()
        self.probed = False  # pick_key found it holding one of the user's credentials (no second probe needed)
        self.matched: tuple[str, bytes] | None = None  # (rp id, credential id) the last probe found on the key
        self._cache = info_cache if identity is not None else None
        self._identity = identity
        self._agreement: tuple[int, Agreement] | None = None
        self._prefetching: threading.Thread | None = None
        self._prefetch_error: BaseException | None = None
        info = self._cached_info(aaguids)
        self.info_cached = info is not None
        with self._errors():
            if info is None:
                self.ctap2 = Ctap2(device, strict_cbor=True) if self._cache is None else ctap2_with_info(device, None)
            else:
                self.ctap2 = ctap2_with_info(device, info)
        if self._cache is not None and info is None:
            self._remember_current()

    def _cached_info(self, aaguids: set[bytes] | frozenset[bytes]) -> Info | None:
        if self._cache is None or self._identity is None:
            return None
        raw = self._cache.get(self._identity)
        if raw is None:
            return None
        try:
            info = parsed_info(raw)
        except Exception:  # noqa: BLE001 - a cached answer that does not parse is no answer
            self._cache.forget(self._identity)
            return None
        if aaguids and bytes(info.aaguid) not in aaguids:
            return None  # another key at this place (replugged): ask it
        return info

    def _remember_current(self) -> None:
        raw = getattr(self.ctap2, "raw_info", None)
        if raw is not None and self._cache is not None and self._identity is not None:
            self._cache.put(self._identity, raw)

    def _read_info(self) -> None:
        """getInfo now; the answer replaces the one in hand (and the cache's)."""
        with self._errors():
            info, raw = read_info(self.ctap2)
        set_info(self.ctap2, info)
        self.info_cached = False
        if self._cache is not None and self._identity is not None:
            self._cache.put(self._identity, raw)

    def _recheck(self) -> bool:
        """The key contradicted a getInfo answer from the cache: read it again. True if it was from the cache (the
        caller may retry once); False if it was fresh (the refusal stands)."""
        if not self.info_cached:
            return False
        if self._cache is not None and self._identity is not None:
            self._cache.forget(self._identity)
        self._read_info()
        return True

    @classmethod
    def from_device(cls, device: CtapDevice, spec: str = "device") -> Key:
        return cls(device, spec)

    def __enter__(self) -> Key:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._settle()
        with contextlib.suppress(Exception):
            close = getattr(self.device, "close", None)
            if close:
                close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- one process at a time on one key -------------------------------------------------------------------

    # --- what a warm process remembers about this key besides getInfo (the PIN guard's witness, pinguard.py) ---

    @property
    def remembers(self) -> bool:
        """This key was opened with a cache that knows its device identity (the warm helper's children)."""
        return self._cache is not None and self._identity is not None

    def witness(self) -> Witness | None:
        """The witness a sign-in left for this device identity, if any (never a decision by itself: pinguard.py)."""
        if self._cache is None or self._identity is None:
            return None
        raw = self._cache.get(self._identity, WITNESS)
        return Witness.decode(raw) if raw is not None else None

    def remember_witness(self, witness: Witness | None) -> None:
        """Keep `witness` for this device identity (None: forget it)."""
        if self._cache is None or self._identity is None:
            return
        if witness is None:
            self._cache.forget(self._identity, WITNESS)
        else:
            self._cache.put(self._identity, witness.encode(), WITNESS)

    def _lock_identity(self) -> str | None:
        """What names this device across processes: its hidraw path or UDP address; None in-process."""
        if self.spec.startswith("udp:"):
            return self.spec
        path = getattr(getattr(self.device, "descriptor", None), "path", None)
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if isinstance(path, str) and path:
            return "hid:" + os.path.realpath(path)
        return None

    def _serialise(self) -> None:
        """Take the device's lock (docs/internals.md) before the first PIN token, held until close(): a new PIN
        token on a key retires the previous one, so sign-ins on one key queue instead of failing each other.
        KeyBusy after DEVICE_LOCK_WAIT seconds."""
        if self._lock is not None:
            return
        identity = self._lock_identity()
        if identity is None:
            return
        from .locks import FileLock

        lock = FileLock("dev", identity)
        if not lock.acquire(timeout=DEVICE_LOCK_WAIT):
            raise KeyBusy()
        self._lock = lock

    @property
    def info(self) -> Info:
        # not _settle(): reading the answer in hand does not wait for the key agreement's thread (the PIN prompt
        # may need it, e.g. Verification's fingerprint check); every exchange with the key does wait
        return self.ctap2.info

    def _settle(self) -> None:
        """Wait for the key agreement's thread (prefetch_key_agreement), if one runs and this is not it; its
        failure is raised here, in the caller's thread, once."""
        thread = self._prefetching
        if thread is None or thread is threading.current_thread():
            return
        thread.join()
        self._prefetching = None
        error, self._prefetch_error = self._prefetch_error, None
        if error is not None:
            raise error

    # --- getInfo --------------------------------------------------------------------------------------------

    def features(self) -> Features:
        options = self.info.options
        rk = options.get("rk") is True
        return Features(
            resident_key=rk,
            client_pin="clientPin" in options,
            hmac_secret="hmac-secret" in self.info.extensions,
            multiple_accounts_per_rp=rk,
            pin_set=options.get("clientPin") is True,
            pin_protocols=tuple(self.info.pin_uv_protocols),
            credential_management=bool(options.get("credMgmt") or options.get("credentialMgmtPreview")),
            builtin_uv="uv" in options,
        )

    def require_features(self) -> Features:
        features = self.features()
        missing = features.missing()
        if missing and self._recheck():
            features = self.features()
            missing = features.missing()
        if missing:
            raise KeyLacksFeature(missing[0])
        return features

    def _client_pin(self) -> RememberingClientPin:
        if "clientPin" not in self.info.options:
            raise KeyLacksFeature("a client PIN")
        return self._new_client_pin("PIN/UV auth protocol 1 or 2")

    def _new_client_pin(self, lacking: str) -> RememberingClientPin:
        """A ClientPin on the protocol getInfo names, given the prefetched key agreement if it is for that one."""
        self._settle()  # the prefetched agreement, or its failure
        try:
            client_pin = RememberingClientPin(self.ctap2)
        except ValueError:
            raise KeyLacksFeature(lacking) from None
        if self._agreement is not None:
            version, agreement = self._agreement
            self._agreement = None  # once: a second token fetches its own
            if version == client_pin.protocol.VERSION:
                client_pin.prefetched = agreement
        return client_pin

    def key_agreement_now(self) -> tuple[int, bytes] | None:
        """getKeyAgreement now, in this thread (after any prefetch, which it replaces), kept for the next PIN token
        as a prefetched one is: (PIN/UV protocol, SHA-256 of the key's key-agreement public key). None, with nothing
        sent, on a key without a PIN set (the PIN path says so). The PIN guard's witness compares it (pinguard.py)."""
        self._settle()
        if self.info.options.get("clientPin") is not True:
            return None
        self._agreement = None
        return self._fetch_agreement()

    def agreement_in_hand(self) -> tuple[int, bytes] | None:
        """The key agreement the next PIN token will use, as key_agreement_now() says it: the prefetched one once its
        thread is done (its failure raised here), else fetched now. The PIN guard compares it with the witness after
        the prompt (pinguard.py, Guard.confirm)."""
        self._settle()
        if self._agreement is None:
            return self.key_agreement_now()
        version, agreement = self._agreement
        return version, agreement.peer_id

    def prefetch_key_agreement(self) -> None:
        """getKeyAgreement for the next PIN token or hmac-secret, started now in a thread (called right before the
        PIN is asked: the message goes to the key while the prompt shows and the person types). Nothing to do for a
        key without a PIN set: the PIN path then says so (PinNotSet). A wrong PIN makes the key regenerate its
        agreement: each attempt fetches anew. A failure (the key gone, say) is raised by the next use of the key."""
        if self.info.options.get("clientPin") is not True or self._agreement is not None or self._prefetching:
            return  # no PIN set, or an agreement in hand already (key_agreement_now) or on its way
        thread = threading.Thread(target=self._prefetch, name="key-agreement", daemon=True)
        self._prefetching = thread
        thread.start()

    def _prefetch(self) -> None:
        try:
            self._fetch_agreement()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by _settle()
            self._prefetch_error = exc

    def _fetch_agreement(self) -> tuple[int, bytes]:
        for retry in (True, False):
            try:
                client_pin = self._new_client_pin("PIN/UV auth protocol 1 or 2")
                with self._errors():
                    agreement = fetch_key_agreement(client_pin)
            except _STALE_INFO:
                if retry and self._recheck():
                    continue
                raise
            self._agreement = (client_pin.protocol.VERSION, agreement)
            return client_pin.protocol.VERSION, agreement.peer_id
        raise AssertionError("unreachable")

    def pin_retries(self) -> int:
        return self.pin_state().attempts_left

    def pin_state(self) -> PinState:
        """One getPinRetries: attempts left, and the power-cycle state where the key reports it (CTAP 2.1). It
        leaves a prefetched key agreement for the PIN token (the PIN guard reads this right before the token)."""
        if "clientPin" not in self.info.options:
            raise KeyLacksFeature("a client PIN")
        try:
            client_pin = RememberingClientPin(self.ctap2)
        except ValueError:
            raise KeyLacksFeature("PIN/UV auth protocol 1 or 2") from None
        with self._errors():
            retries, power_cycle = client_pin.get_pin_retries()
        return PinState(int(retries), power_cycle is True)

    def confirm_presence(self, rp_credentials: Sequence[tuple[str, bytes]]) -> None:
        """One touch, no PIN: CTAP 2.1 authenticatorSelection, or on an older key an up=true getAssertion for one of
        the credentials (no PIN token: the key checks presence only). UserPresenceFailed if refused or not given."""
        with self._errors():
            if "FIDO_2_1" in self.info.versions:
                self.ctap2.selection()
                return
            if not rp_credentials:
                raise KeyLacksFeature("authenticatorSelection (CTAP 2.1)")
            rp_id = rp_credentials[0][0]
            allow: list[Mapping[str, Any]] = [
                {"type": "public-key", "id": c} for rp, c in rp_credentials if rp == rp_id
            ]
            self.ctap2.get_assertion(rp_id, os.urandom(32), allow[: max(1, self.info.max_creds_in_list or 1)])

    # --- the PIN --------------------------------------------------------------------------------------------

    def pin_token(self, pin: str, permissions: int, rp_id: str | None) -> Token:
        """getKeyAgreement (unless prefetched) + getPinUvAuthTokenUsingPinWithPermissions. WrongPin carries the
        attempts left. A refusal that a cached getInfo answer may have caused is retried once
        with a fresh one. A PIN no key accepts is refused first (PinMalformed): nothing is sent, no attempt used."""
        check_pin(pin)
        for retry in (True, False):
            try:
                return self._pin_token(pin, permissions, rp_id)
            except _STALE_INFO:
                if retry and self._recheck():
                    continue
                raise
        raise AssertionError("unreachable")

    def ready_for_pin(self) -> None:
        """What a PIN token needs before anything is sent: the key has a PIN set (else PinNotSet), and this process
        holds the device's lock (KeyBusy after DEVICE_LOCK_WAIT). The PIN guard calls it before it charges the PIN
        to the throttle; pin_token calls it again (nothing more to do then)."""
        self._settle()  # the getInfo answer the agreement's thread may have re-read
        if self.info.options.get("clientPin") is False:
            raise PinNotSet()
        self._serialise()

    def _pin_token(self, pin: str, permissions: int, rp_id: str | None) -> Token:
        self.ready_for_pin()
        client_pin = self._client_pin()
        try:
            with self._errors():
                value = client_pin.get_pin_token(pin, PERMISSION(permissions), rp_id)
        except WrongPin:
            raise WrongPin(self._retries_or_none()) from None
        agreement = client_pin.remembered_agreement()
        return Token(
            value,
            client_pin.protocol,
            agreement.platform,
            agreement.secret,
            int(permissions),
            rp_id,
            agreement_id=agreement.peer_id,
        )

    def _retries_or_none(self) -> int | None:
        try:
            return self.pin_retries()
        except HmacUnlockError:
            return None

    # --- built-in user verification (a fingerprint) -----------------------------------------------------------

    def fingerprint_ready(self) -> bool:
        """The key verifies the user itself and a finger is enrolled (getInfo `uv` true) and it gives tokens for it
        (CTAP 2.1 pinUvAuthToken): getPinUvAuthTokenUsingUvWithPermissions instead of the PIN."""
        options = self.info.options
        return options.get("uv") is True and options.get("pinUvAuthToken") is True

    def uv_token(self, permissions: int, rp_id: str | None) -> Token | None:
        """getKeyAgreement + getPinUvAuthTokenUsingUvWithPermissions: the key waits for the finger. None when the
        finger does not match or the key has blocked it (UV_INVALID, UV_BLOCKED): the PIN is the fallback."""
        client_pin = self._client_pin()
        with self._errors():
            try:
                value = client_pin.get_uv_token(PERMISSION(permissions), rp_id)
            except CtapError as exc:
                if exc.code in (ERR.UV_INVALID, ERR.UV_BLOCKED):
                    return None
                raise
        key_agreement, secret = client_pin.remembered()
        return Token(value, client_pin.protocol, key_agreement, secret, int(permissions), rp_id, True)

    def set_pin(self, pin: str) -> None:
        self._check_new_pin(pin)
        with self._errors():
            self._client_pin().set_pin(pin)
        self._refresh_info()

    def change_pin(self, old_pin: str, new_pin: str) -> None:
        """changePIN. The old PIN is refused first if no key accepts it (PinMalformed: nothing sent, no attempt used);
        a wrong one is WrongPin with the attempts left."""
        check_pin(old_pin)
        self._check_new_pin(new_pin)
        try:
            with self._errors():
                self._client_pin().change_pin(old_pin, new_pin)
        except WrongPin:
            raise WrongPin(self._retries_or_none()) from None
        self._refresh_info()

    def _check_new_pin(self, pin: str) -> None:
        minimum = max(4, self.info.min_pin_length or 4)
        if len(pin) < minimum:
            raise PinPolicy(f"The PIN must have at least {minimum} characters.")
        if len(pin.encode()) > 63:
            raise PinPolicy("The PIN must be at most 63 bytes long.")

    def _refresh_info(self) -> None:
        self._read_info()  # the PIN state changed; one more getInfo, outside unlocks (the cache's too)

    # --- credentials ----------------------------------------------------------------------------------------

    def make_credential(
        self,
        token: Token | None,
        rp_id: str,
        user_handle: bytes,
        user_name: str,
        *,
        resident: bool = True,
        cred_protect: int | None = 2,
        exclude: Sequence[bytes] = (),
    ) -> NewCredential:
        """makeCredential (ES256, hmac-secret, credProtect when the key has it) under the token's mc permission.
        `exclude`: credential ids the key must not already hold for rp_id (the excludeList; under a PIN token it also
        matches credProtect-3 credentials, which the up=false probe cannot see): CredentialExcluded if it does, after
        the key's touch (CTAP 2.1 §6.1.2 step 10) and before anything is made."""
        client_data_hash = os.urandom(32)
        exclude_list: list[Mapping[str, Any]] | None = [
            {"type": "public-key", "id": c} for c in list(exclude)[: max(1, self.info.max_creds_in_list or 1)]
        ] or None
        extensions: dict[str, Any] = {"hmac-secret": True}
        if cred_protect and "credProtect" in self.info.extensions:
            extensions["credProtect"] = cred_protect
        with self._errors():
            response = self.ctap2.make_credential(
                client_data_hash,
                {"id": rp_id, "name": "hmacunlock"},
                {"id": user_handle, "name": user_name, "displayName": user_name},
                ES256,
                exclude_list=exclude_list,
                extensions=extensions,
                options={"rk": resident},
                **(token.param(client_data_hash) if token else {}),
            )
        data = response.auth_data
        cred = data.credential_data
        if cred is None:
            raise KeyCommandFailed("The security key made a credential but did not return it.")
        ext = data.extensions or {}
        if ext.get("hmac-secret") is not True:
            raise KeyLacksFeature("the hmac-secret extension")
        return NewCredential(
            bytes(cred.credential_id),
            cbor.encode(dict(cred.public_key)),
            bytes(cred.aaguid),
            data.counter,
            user_handle,
            data,
            True,
            ext.get("credProtect"),
        )

    def hmac_assertion(
        self,
        token: Token | None,
        rp_id: str,
        credential_ids: Sequence[bytes] | None,
        salt1: bytes,
        salt2: bytes | None = None,
        *,
        up: bool = True,
    ) -> HmacAssertion:
        """ONE getAssertion with hmac-secret (salts encrypted under the token's own shared secret)."""
        if len(salt1) != 32 or (salt2 is not None and len(salt2) != 32):
            raise ValueError("hmac-secret salts are 32 bytes")
        if token is None:  # no PIN (e.g. a systemd-fido2 token without clientPin): hmac-secret still needs an ECDH
            client_pin = self._new_client_pin("PIN/UV auth protocol 1 or 2 (for hmac-secret)")
            with self._errors():
                key_agreement, secret = shared_secret(client_pin)
            protocol = client_pin.protocol
        else:
            key_agreement, secret, protocol = token.key_agreement, token.shared_secret, token.protocol
        salt_enc = protocol.encrypt(secret, salt1 + (salt2 or b""))
        hmac_input: dict[int, Any] = {1: key_agreement, 2: salt_enc, 3: protocol.authenticate(secret, salt_enc)}
        if protocol.VERSION != 1:
            hmac_input[4] = protocol.VERSION
        client_data_hash = os.urandom(32)
        allow: list[Mapping[str, Any]] | None = (
            [{"type": "public-key", "id": c} for c in credential_ids] if credential_ids else None
        )
        with self._errors():
            # up=true is the default: leave it out, as libfido2 does, for CTAP 2.0 keys that refuse the option
            response = self.ctap2.get_assertion(
                rp_id,
                client_data_hash,
                allow,
                {"hmac-secret": hmac_input},
                None if up else {"up": False},
                **(token.param(client_data_hash) if token else {}),
            )
        return self._hmac_result(response, protocol, secret, client_data_hash, salt2 is not None)

    def _hmac_result(
        self,
        response: AssertionResponse,
        protocol: PinProtocol,
        shared_secret: bytes,
        client_data_hash: bytes,
        two: bool,
    ) -> HmacAssertion:
        encrypted = (response.auth_data.extensions or {}).get("hmac-secret")
        out1 = out2 = None
        if isinstance(encrypted, bytes):
            try:
                plain = protocol.decrypt(shared_secret, encrypted)
            except Exception:  # noqa: BLE001 - a malformed ciphertext is the key's fault, reported below
                plain = b""
            if len(plain) == (64 if two else 32):
                out1, out2 = plain[:32], (plain[32:] or None)
        user = response.user or {}
        return HmacAssertion(
            bytes(response.credential["id"]),
            response.auth_data,
            response.signature,
            client_data_hash,
            user.get("id"),
            response.number_of_credentials,
            out1,
            out2,
        )

    def accounts(self, token: Token, rp_id: str) -> list[Account]:
        """The discoverable credentials for rp_id, without a touch (up=false does not use up the token)."""
        client_data_hash = os.urandom(32)
        with self._errors():
            first = self.ctap2.get_assertion(
                rp_id, client_data_hash, None, None, {"up": False}, **token.param(client_data_hash)
            )
            responses = [first] + [
                self.ctap2.get_next_assertion() for _ in range((first.number_of_credentials or 1) - 1)
            ]
        return [Account(bytes(r.credential["id"]), (r.user or {}).get("id")) for r in responses]

    # --- credential management (CTAP 2.1 §6.8) -------------------------------------------------------------

    def _credman(self, token: Token) -> CredentialManagement:
        """python-fido2's CredentialManagement under a token with the cm permission (credMgmt or its preview)."""
        if not self.features().credential_management:
            raise KeyLacksFeature("credential management (credMgmt)")
        with self._errors():
            return CredentialManagement(self.ctap2, token.protocol, token.value)

    def capacity(self, token: Token) -> Capacity:
        """getCredsMetadata: how many discoverable credentials the key holds, and how many more fit."""
        cm = self._credman(token)
        with self._errors():
            meta = cm.get_metadata()
        result = CredentialManagement.RESULT
        return Capacity(int(meta[result.EXISTING_CRED_COUNT]), int(meta[result.MAX_REMAINING_COUNT]))

    def resident_credentials(self, token: Token) -> list[ResidentCredential]:
        """Every discoverable credential on the key, RP by RP (enumerateRPs, then enumerateCredentials for each)."""
        cm = self._credman(token)
        result = CredentialManagement.RESULT
        found: list[ResidentCredential] = []
        with self._errors():
            for rp in cm.enumerate_rps():
                rp_id = str(rp[result.RP]["id"])
                for cred in cm.enumerate_creds(rp[result.RP_ID_HASH]):
                    user = cred.get(result.USER) or {}
                    found.append(
                        ResidentCredential(
                            rp_id,
                            bytes(cred[result.CREDENTIAL_ID]["id"]),
                            bytes(user.get("id", b"")),
                            user.get("name"),
                            user.get("displayName"),
                            cred.get(result.CRED_PROTECT),
                        )
                    )
        return found

    def delete_credential(self, token: Token, credential_id: bytes) -> None:
        """deleteCredential; CredentialNotOnKey when the key holds no such credential."""
        cm = self._credman(token)
        with self._errors():
            cm.delete_cred(PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY, id=credential_id))

    def reset(self) -> None:
        """authenticatorReset: erases every credential and the PIN. Keys take it only within about 10 s of being
        plugged in (ResetNotAllowed otherwise) and after a touch (UserPresenceFailed if refused or not given)."""
        with self._errors():
            try:
                self.ctap2.reset()
            except CtapError as exc:
                if exc.code == ERR.NOT_ALLOWED:
                    raise ResetNotAllowed() from None
                raise
        self._refresh_info()

    def holds_any(self, rp_credentials: Sequence[tuple[str, bytes]]) -> bool:
        """The up=false, no-PIN probe: `auto` finds which of several keys holds a user's credential with it, and
        the PIN guard checks the one key before any PIN is asked. A refusal other than "no such credential" from a
        key whose getInfo came from the cache (e.g. the message size) has it read again and the probe retried once.
        """
        for retry in (True, False):
            held, refused = self._probe(rp_credentials)
            if held or not refused or not (retry and self._recheck()):
                return held
        return False

    def _probe(self, rp_credentials: Sequence[tuple[str, bytes]]) -> tuple[bool, bool]:
        """(held, whether some request was refused for another reason than NO_CREDENTIALS)."""
        by_rp: dict[str, list[bytes]] = {}
        for rp_id, cred_id in rp_credentials:
            by_rp.setdefault(rp_id, []).append(cred_id)
        chunk = max(1, self.info.max_creds_in_list or 1)
        refused = False
        for rp_id, ids in by_rp.items():
            for start in range(0, len(ids), chunk):
                allow: list[Mapping[str, Any]] = [{"type": "public-key", "id": c} for c in ids[start : start + chunk]]
                try:
                    with self._errors():
                        found = self.ctap2.get_assertion(rp_id, os.urandom(32), allow, None, {"up": False})
                    # which one: the key may leave the credential out when the list had one (CTAP 2.1 §6.2.3)
                    picked = (found.credential or {}).get("id") or (allow[0]["id"] if len(allow) == 1 else None)
                    self.matched = (rp_id, bytes(picked)) if picked else None
                    return True, refused
                except CredentialNotOnKey:
                    continue
                except KeyCommandFailed:
                    refused = True
                    continue
        return False, refused

    # --- errors ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        self._settle()  # one CTAP exchange at a time: the key agreement's thread first
        try:
            yield
        except HmacUnlockError:
            raise
        except CtapError as exc:
            raise _ctap_error(exc.code) from None
        except (OSError, EOFError) as exc:
            raise KeyRemoved(f"The security key ({self.spec}) went away: {type(exc).__name__}.") from None
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise KeyCommandFailed(
                f"The security key ({self.spec}) sent an answer that does not parse ({type(exc).__name__})."
            ) from None
        except Exception as exc:  # noqa: BLE001 - python-fido2's ConnectionFailure and friends
            raise KeyRemoved(f"The security key ({self.spec}) stopped answering: {type(exc).__name__}.") from None


_BY_CODE: dict[int, Callable[[], HmacUnlockError]] = {
    ERR.PIN_INVALID: lambda: WrongPin(None),  # pin_token / change_pin add the attempts left
    ERR.PIN_AUTH_BLOCKED: PinSoftLocked,
    ERR.PIN_AUTH_INVALID: KeyBusy,  # our token was retired by another client's getPinToken meanwhile
    ERR.PIN_BLOCKED: PinBlocked,
    ERR.PIN_NOT_SET: PinNotSet,
    ERR.PIN_POLICY_VIOLATION: lambda: PinPolicy("The security key does not accept that PIN (its PIN policy)."),
    ERR.NO_CREDENTIALS: CredentialNotOnKey,
    ERR.CREDENTIAL_EXCLUDED: CredentialExcluded,
    ERR.OPERATION_DENIED: lambda: UserPresenceFailed("The touch was refused."),
    ERR.USER_ACTION_TIMEOUT: lambda: UserPresenceFailed("The security key was not touched in time."),
    ERR.ACTION_TIMEOUT: lambda: UserPresenceFailed("The security key was not touched in time."),
    ERR.KEEPALIVE_CANCEL: lambda: Cancelled("Cancelled."),
    ERR.UNSUPPORTED_OPTION: lambda: KeyLacksFeature("a requested option"),
    ERR.UNSUPPORTED_ALGORITHM: lambda: KeyLacksFeature("ES256 (P-256) credentials"),
    ERR.KEY_STORE_FULL: lambda: KeyCommandFailed("The security key has no room for another credential."),
}


def _ctap_error(code: int) -> HmacUnlockError:
    if code in _BY_CODE:
        return _BY_CODE[code]()
    try:
        name = ERR(code).name
    except ValueError:
        name = f"0x{code:02x}"
    return KeyCommandFailed(f"The security key refused the request ({name}).")


def __getattr__(name: str) -> Any:
    """Device discovery moved to libhmacunlock.discovery; `from libhmacunlock.device import open_key` still works."""
    if name in ("open_key", "pick_key", "list_hid_keys"):
        from . import discovery

        return getattr(discovery, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
