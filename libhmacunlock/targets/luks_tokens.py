"""The LUKS2 token types hmacunlock reads and writes, and the passphrases they stand for (docs/luks-and-profile.md).

- `hmacunlock`: our own; names the user, the keyslot and the purpose label whose derived key is the passphrase.
- `hmacunlock-pending`: written before a keyslot is added, naming the keyslot number about to be created and what
  for; removed once the real token names the keyslot. After a kill in between, it says which keyslot is whose, so
  no keyslot is ever left that no token explains (issue 17, F3).
- `systemd-fido2`: systemd-cryptenroll's; the passphrase is base64 of the key's raw hmac-secret output.

Pure data: JSON in, JSON out; cryptsetup.py runs the command, luks.py holds the flows.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import TargetError

TOKEN_TYPE = "hmacunlock"  # noqa: S105 - a LUKS token type, not a secret
PENDING_TYPE = "hmacunlock-pending"
TOKEN_VERSION = 1
SYSTEMD_TOKEN_TYPE = "systemd-fido2"  # noqa: S105 - a LUKS token type, not a secret
SYSTEMD_RP_ID = "io.systemd.cryptsetup"


# --- passphrases ----------------------------------------------------------------------------------------------


def purpose_label(volume_uuid: str) -> str:
    """The HKDF purpose label of one volume: its own key, useless for any other volume."""
    return f"luks:{volume_uuid.lower()}"


def encode_passphrase(secret: bytes) -> bytes:
    """Base64 (standard alphabet, padded) of a derived key or hmac-secret output.

    ASCII with no newline or white space, so the same bytes come through cryptsetup's `--key-file` (read whole),
    its interactive prompt (read to the newline) and a crypttab keyscript; and it is systemd's own encoding
    (base64mem of the hmac output), so one rule serves both token types.
    """
    return base64.b64encode(secret)


def passphrase_for(unlock_key: bytes, volume_uuid: str) -> bytes:
    """The keyslot passphrase of `volume_uuid` for the user whose unlock key this is."""
    from ..keys import derive

    return encode_passphrase(derive(unlock_key, purpose_label(volume_uuid)))


# --- tokens ---------------------------------------------------------------------------------------------------


def _keyslot(value: Any) -> int:
    slot = int(value)
    if not 0 <= slot < 32 or str(slot) != str(value):
        raise ValueError(f"keyslot {value!r} out of range")
    return slot


@dataclass(frozen=True)
class HmacUnlockToken:
    """Our token: which user's derived key opens which keyslot."""

    user: str
    keyslot: int
    purpose: str
    token_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": TOKEN_TYPE,
            "keyslots": [str(self.keyslot)],
            "hmacunlock-version": TOKEN_VERSION,
            "hmacunlock-user": self.user,
            "hmacunlock-purpose": self.purpose,
            "hmacunlock-encoding": "base64",
        }

    @classmethod
    def from_json(cls, token_id: int, obj: Mapping[str, Any]) -> HmacUnlockToken:
        try:
            if obj.get("hmacunlock-version") != TOKEN_VERSION or obj.get("hmacunlock-encoding") != "base64":
                raise ValueError("unknown version or encoding")
            (slot,) = obj["keyslots"]
            user, purpose = obj["hmacunlock-user"], obj["hmacunlock-purpose"]
            if not isinstance(user, str) or not isinstance(purpose, str):
                raise ValueError("user and purpose must be strings")
            return cls(user=user, keyslot=_keyslot(slot), purpose=purpose, token_id=token_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(f"LUKS2 token {token_id} of type {TOKEN_TYPE!r} is malformed ({exc}).") from None


@dataclass(frozen=True)
class PendingToken:
    """A keyslot about to be added (or added by a command that was killed before its token was written)."""

    keyslot: int
    owner: str  # "user NAME" (our token) or "systemd-fido2"
    token_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        # no keyslot in "keyslots": cryptsetup refuses a token naming a keyslot that does not exist yet
        return {
            "type": PENDING_TYPE,
            "keyslots": [],
            "hmacunlock-keyslot": str(self.keyslot),
            "hmacunlock-for": self.owner,
        }

    @classmethod
    def from_json(cls, token_id: int, obj: Mapping[str, Any]) -> PendingToken:
        try:
            owner = obj["hmacunlock-for"]
            if not isinstance(owner, str):
                raise ValueError("owner must be a string")
            return cls(keyslot=_keyslot(obj["hmacunlock-keyslot"]), owner=owner, token_id=token_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(f"LUKS2 token {token_id} of type {PENDING_TYPE!r} is malformed ({exc}).") from None


def owner_of_user(user: str) -> str:
    return f"user {user}"


@dataclass(frozen=True)
class SystemdFido2Token:
    """systemd-cryptenroll's token (src/cryptenroll/cryptenroll-fido2.c): a non-resident credential, salt1 only."""

    keyslot: int
    credential_id: bytes
    salt: bytes
    rp_id: str = SYSTEMD_RP_ID
    client_pin_required: bool = True
    up_required: bool = True
    uv_required: bool = False
    token_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": SYSTEMD_TOKEN_TYPE,
            "keyslots": [str(self.keyslot)],
            "fido2-credential": base64.b64encode(self.credential_id).decode(),
            "fido2-salt": base64.b64encode(self.salt).decode(),
            "fido2-rp": self.rp_id,
            "fido2-clientPin-required": self.client_pin_required,
            "fido2-up-required": self.up_required,
            "fido2-uv-required": self.uv_required,
        }

    @classmethod
    def from_json(cls, token_id: int, obj: Mapping[str, Any]) -> SystemdFido2Token:
        # systemd's own defaults for fields older enrollments lack (cryptsetup-fido2.c): PIN and UP required.
        try:
            slots = [int(s) for s in obj["keyslots"]]
            if len(slots) != 1:
                raise ValueError(f"{len(slots)} keyslots")
            return cls(
                keyslot=slots[0],
                credential_id=base64.b64decode(obj["fido2-credential"], validate=True),
                salt=base64.b64decode(obj["fido2-salt"], validate=True),
                rp_id=str(obj.get("fido2-rp", SYSTEMD_RP_ID)),
                client_pin_required=bool(obj.get("fido2-clientPin-required", True)),
                up_required=bool(obj.get("fido2-up-required", True)),
                uv_required=bool(obj.get("fido2-uv-required", False)),
                token_id=token_id,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(f"LUKS2 token {token_id} of type {SYSTEMD_TOKEN_TYPE!r} is malformed ({exc}).") from None


# --- reading a header's tokens ----------------------------------------------------------------------------------


def hmacunlock_tokens(raw: Mapping[int, Mapping[str, Any]]) -> list[HmacUnlockToken]:
    """Our tokens that name a keyslot (see `stale_tokens` for those whose keyslot is gone)."""
    return [
        HmacUnlockToken.from_json(i, t)
        for i, t in sorted(raw.items())
        if t.get("type") == TOKEN_TYPE and t.get("keyslots") != []
    ]


def stale_tokens(raw: Mapping[int, Mapping[str, Any]]) -> dict[int, str | None]:
    """Our tokens whose keyslot is gone (cryptsetup empties `keyslots` when it kills the slot: a remove killed
    between the two steps): token id -> the user it names. They open nothing; the flows remove them."""
    return {
        i: t.get("hmacunlock-user") if isinstance(t.get("hmacunlock-user"), str) else None
        for i, t in sorted(raw.items())
        if t.get("type") == TOKEN_TYPE and t.get("keyslots") == []
    }


def pending_tokens(raw: Mapping[int, Mapping[str, Any]]) -> list[PendingToken]:
    return [PendingToken.from_json(i, t) for i, t in sorted(raw.items()) if t.get("type") == PENDING_TYPE]


def systemd_tokens(raw: Mapping[int, Mapping[str, Any]]) -> list[SystemdFido2Token]:
    return [SystemdFido2Token.from_json(i, t) for i, t in sorted(raw.items()) if t.get("type") == SYSTEMD_TOKEN_TYPE]


def named_keyslots(raw: Mapping[int, Mapping[str, Any]]) -> set[int]:
    """Keyslots any token of any type names (`keyslots`), and those pending tokens name."""
    named: set[int] = set()
    for t in raw.values():
        for s in t.get("keyslots", []) if isinstance(t.get("keyslots"), list) else []:
            try:
                named.add(int(s))
            except (TypeError, ValueError):
                continue
    return named | {p.keyslot for p in pending_tokens(raw)}
