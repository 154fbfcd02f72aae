"""Every use of python-fido2's internals, in one place, each with its reason (docs/internals.md, python-fido2).

The rest of libhmacunlock uses python-fido2's public API only. What is here reaches past it, so an upgrade may
break it: the pin in setup.cfg (`fido2>=2.0,<3`) is the first guard, the checks at import below the second, and
tests/test_fido2_compat.py the third — it fails loudly when one of these changes shape or behaviour, instead of
unlocks silently getting slower (a fourth CTAP message) or wrong.

Internals used (python-fido2 2.x):
- `ClientPin._get_shared_secret()`: the one place ClientPin runs getKeyAgreement + ECDH. `RememberingClientPin`
  overrides it to keep the (key agreement, shared secret) that the PIN token was made under, so hmac-secret's salts
  are encrypted under the same agreement: an unlock is getKeyAgreement, getPinUvAuthToken, getAssertion — three
  messages, not four. `shared_secret()` calls it for hmac-secret without a PIN token (no public call does that).
  `RememberingClientPin.prefetched`: a key agreement fetched earlier (while the person types, issue 14), used once
  instead of asking the key again. The override fetches the agreement itself (`fetch_key_agreement`: python-fido2's
  own two public steps, `Ctap2.client_pin(getKeyAgreement)` and `PinProtocol.encapsulate`) so that the key's own
  key-agreement public key is kept too: the PIN guard's witness (pinguard.py) compares it across sign-ins.
- `Ctap2._info`: the getInfo answer Ctap2 caches at construction (`Ctap2.info` is read-only). `set_info()` replaces
  it after a PIN change (the PIN state is part of getInfo), where a new Ctap2 would cost the same getInfo and leave
  old references stale.
- `Ctap2.__init__` always sends getInfo. `ctap2_with_info()` builds a Ctap2 around an answer already in hand (the
  warm helper's cache, keyinfo.py), setting what `__init__` sets (`device`, `_strict_cbor`, `_info`,
  `_max_msg_size`), or sends the getInfo itself to keep the raw answer for the cache (`raw_info`).
- `fido2.utils.get_type_hints`: python-fido2 parses every answer (Info, AssertionResponse, AuthenticatorData)
  through `_DataClassMapping`, which calls `typing.get_type_hints(cls)` twice per object; under `from __future__
  import annotations` that evaluates every annotation string anew (≈ 3.6 ms per Info parse on a loaded machine,
  0.7 with the cache). A class's hints never change, and python-fido2 only reads the dict it gets: the module's
  name is rebound to a per-class cache (`cache_type_hints()`, at import), so the assertion's parse after Enter is
  not paid for by eval().
"""

from __future__ import annotations

import functools
import hashlib
import typing
from typing import Any, NamedTuple

import fido2.utils
from fido2 import cbor
from fido2.ctap import CtapDevice
from fido2.ctap2 import Ctap2, Info
from fido2.ctap2.pin import ClientPin
from fido2.hid import CAPABILITY

KeyAgreement = dict[int, Any]  # the platform's COSE key, as sent in keyAgreement (0x01)


def _check() -> None:
    """Refuse to run on a python-fido2 whose internals are not the ones this module was written against.

    Cheap (code objects, no source read): this runs on every sign-in's import of the library."""
    shared = getattr(ClientPin, "_get_shared_secret", None)
    if getattr(getattr(shared, "__code__", None), "co_argcount", None) != 1:
        raise ImportError(
            "python-fido2's ClientPin._get_shared_secret(self) changed: see libhmacunlock/fido2_compat.py"
        )
    for method in (ClientPin.get_pin_token, ClientPin.set_pin, ClientPin.change_pin):
        if "_get_shared_secret" not in method.__code__.co_names:
            raise ImportError(
                f"python-fido2's ClientPin.{method.__name__} no longer calls _get_shared_secret: "
                "see libhmacunlock/fido2_compat.py"
            )
    if "_info" not in Ctap2.__init__.__code__.co_names:
        raise ImportError("python-fido2's Ctap2 no longer caches getInfo in _info: see libhmacunlock/fido2_compat.py")
    if set(Ctap2.__init__.__code__.co_names) & _CTAP2_FIELDS != _CTAP2_FIELDS:
        raise ImportError("python-fido2's Ctap2.__init__ sets other fields: see libhmacunlock/fido2_compat.py")


_CTAP2_FIELDS = {"device", "_strict_cbor", "_max_msg_size", "_info"}


def cache_type_hints() -> None:
    """Rebind fido2.utils.get_type_hints to a cached typing.get_type_hints (once; see the module's docstring)."""
    current = getattr(fido2.utils, "get_type_hints", None)
    if getattr(current, "__wrapped__", None) is typing.get_type_hints:
        return  # done already
    if current is not typing.get_type_hints:
        raise ImportError(
            "python-fido2's utils no longer uses typing.get_type_hints: see libhmacunlock/fido2_compat.py"
        )
    fido2.utils.get_type_hints = functools.lru_cache(maxsize=256)(typing.get_type_hints)  # type: ignore[assignment]


_check()
cache_type_hints()


class Agreement(NamedTuple):
    """One getKeyAgreement and its ECDH: the key's public key as it sent it, ours (sent with a PIN hash or
    hmac-secret's salts), and the shared secret."""

    peer: KeyAgreement
    platform: KeyAgreement
    secret: bytes

    @property
    def peer_id(self) -> bytes:
        """SHA-256 of the key's key-agreement public key (canonical CBOR): what the witness compares."""
        return hashlib.sha256(cbor.encode(dict(self.peer))).digest()


def fetch_key_agreement(client_pin: ClientPin) -> Agreement:
    """getKeyAgreement + ECDH on client_pin's protocol, keeping the key's public key (what _get_shared_secret does,
    through the same public calls)."""
    answer = client_pin.ctap.client_pin(client_pin.protocol.VERSION, ClientPin.CMD.GET_KEY_AGREEMENT)
    peer = answer[ClientPin.RESULT.KEY_AGREEMENT]
    platform, secret = client_pin.protocol.encapsulate(peer)
    return Agreement(peer, dict(platform), secret)


class RememberingClientPin(ClientPin):
    """ClientPin that keeps its last key agreement (`last`, with the key's public key) and uses one fetched earlier
    (`prefetched`, once) instead of asking the key for one."""

    last: Agreement | None = None
    prefetched: Agreement | None = None

    def _get_shared_secret(self) -> tuple[KeyAgreement, bytes]:
        if self.prefetched is not None:
            self.last, self.prefetched = self.prefetched, None
        else:
            self.last = fetch_key_agreement(self)
        return self.last.platform, self.last.secret

    def remembered(self) -> tuple[KeyAgreement, bytes]:
        """The agreement the last PIN token was made under; loud if python-fido2 went around the override."""
        agreement = self.remembered_agreement()
        return agreement.platform, agreement.secret

    def remembered_agreement(self) -> Agreement:
        if self.last is None:
            raise RuntimeError(
                "python-fido2 made a PIN token without ClientPin._get_shared_secret: see libhmacunlock/fido2_compat.py"
            )
        return self.last


def shared_secret(client_pin: ClientPin) -> tuple[KeyAgreement, bytes]:
    """A new getKeyAgreement + ECDH: (the platform key agreement to send, the shared secret)."""
    result: tuple[KeyAgreement, bytes] = client_pin._get_shared_secret()
    return result


def set_info(ctap2: Ctap2, info: Info) -> None:
    """Make `info` the getInfo answer `ctap2.info` returns (after a PIN change), with its message size."""
    ctap2._info = info
    ctap2._max_msg_size = info.max_msg_size


def read_info(ctap2: Ctap2) -> tuple[Info, bytes]:
    """getInfo, and its raw answer (canonical CBOR, as the key sent it) for a cache."""
    answer = ctap2.send_cbor(Ctap2.CMD.GET_INFO)
    return Info.from_dict(answer), cbor.encode(dict(answer))


def ctap2_with_info(device: CtapDevice, info: Info | None) -> Ctap2:
    """A Ctap2 on `device` whose getInfo answer is `info` (no message sent); with None, getInfo is sent and its raw
    answer kept as `raw_info` (for keyinfo's cache). Otherwise what Ctap2(device) gives."""
    if not device.capabilities & CAPABILITY.CBOR:
        raise ValueError("Device does not support CTAP2.")
    ctap2 = Ctap2.__new__(Ctap2)
    ctap2.device = device
    ctap2._strict_cbor = True
    ctap2._max_msg_size = 1024  # for the getInfo itself, as Ctap2() does
    raw = None
    if info is None:
        info, raw = read_info(ctap2)
    set_info(ctap2, info)
    ctap2.raw_info = raw  # type: ignore[attr-defined]
    return ctap2
