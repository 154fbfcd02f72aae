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
- `Ctap2._info`: the getInfo answer Ctap2 caches at construction (`Ctap2.info` is read-only). `set_info()` replaces
  it after a PIN change (the PIN state is part of getInfo), where a new Ctap2 would cost the same getInfo and leave
  old references stale.
"""

from __future__ import annotations

from typing import Any

from fido2.ctap2 import Ctap2, Info
from fido2.ctap2.pin import ClientPin

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


_check()


class RememberingClientPin(ClientPin):
    """ClientPin that keeps the (key agreement, shared secret) of its last getKeyAgreement in `last`."""

    last: tuple[KeyAgreement, bytes] | None = None

    def _get_shared_secret(self) -> tuple[KeyAgreement, bytes]:
        self.last = super()._get_shared_secret()
        return self.last

    def remembered(self) -> tuple[KeyAgreement, bytes]:
        """The agreement the last PIN token was made under; loud if python-fido2 went around the override."""
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
    """Make `info` the getInfo answer `ctap2.info` returns (after a PIN change)."""
    ctap2._info = info
