"""The per-user record: schema version 1, as stored in STORE/USER.json.

```
{"schema": 1, "user": "alice",
 "slots": [{"credential_id", "rp_id", "user_handle", "public_key" (COSE, CBOR), "aaguid", "sign_count",
            "require_uv", "require_up", "cred_protect", "salt", "wrapped", "created"}],   # bytes: base64url
 "recovery": [{"id", "kind": "recovery-key" | "passphrase", "kdf": {...} | null, "wrapped", "created"}],
 "targets": [ ... opaque to the library: LUKS / fscrypt modules keep what they need here ... ],
 "uk_check": keys.unlock_key_check(UK)}   # which UK every slot wraps (absent in records older than issue 17)
```
`wrapped` = AES-256-GCM(nonce ‖ ct ‖ tag) of the unlock key; its AAD is `aad()` below: the schema, the user and
every other field of the slot, so changing any of them makes the unwrap fail (RecordTampered).
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

SCHEMA = 1


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64d(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class Slot:
    credential_id: bytes
    rp_id: str
    user_handle: bytes
    public_key: bytes  # the COSE key, CBOR-encoded
    aaguid: bytes
    sign_count: int
    salt: bytes
    wrapped: bytes
    require_uv: bool = True
    require_up: bool = True
    cred_protect: int = 2
    created: str = ""

    _BYTES = ("credential_id", "user_handle", "public_key", "aaguid", "salt", "wrapped")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = b64e(value) if f.name in self._BYTES else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Slot":
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is MISSING:
                    raise KeyError(f.name)
                continue
            value = data[f.name]
            kwargs[f.name] = b64d(value) if f.name in cls._BYTES else value
        slot = cls(**kwargs)
        _check_types(
            slot,
            {
                "rp_id": str,
                "sign_count": int,
                "require_uv": bool,
                "require_up": bool,
                "cred_protect": int,
                "created": str,
            },
        )
        return slot

    def aad(self, user: str) -> bytes:
        bound = self.to_json()
        del bound["wrapped"]
        return b"hmacunlock slot\0" + _canonical({"schema": SCHEMA, "user": user, "slot": bound})

    @property
    def credential_id_text(self) -> str:
        return b64e(self.credential_id)

    def with_(self, **changes: Any) -> "Slot":
        return replace(self, **changes)


@dataclass(frozen=True)
class RecoverySlot:
    id: str
    kind: str  # "recovery-key" | "passphrase"
    wrapped: bytes
    kdf: dict[str, Any] | None = None
    created: str = ""

    KINDS = ("recovery-key", "passphrase")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "kdf": self.kdf,
            "wrapped": b64e(self.wrapped),
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RecoverySlot":
        slot = cls(data["id"], data["kind"], b64d(data["wrapped"]), data.get("kdf"), data.get("created", ""))
        _check_types(slot, {"id": str, "kind": str, "created": str})
        if slot.kind not in cls.KINDS or (slot.kdf is not None and not isinstance(slot.kdf, dict)):
            raise ValueError(f"unknown recovery slot kind {slot.kind!r}")
        return slot

    def aad(self, user: str) -> bytes:
        bound = self.to_json()
        del bound["wrapped"]
        return b"hmacunlock recovery\0" + _canonical({"schema": SCHEMA, "user": user, "slot": bound})


@dataclass(frozen=True)
class Record:
    user: str
    slots: tuple[Slot, ...] = ()
    recovery: tuple[RecoverySlot, ...] = ()
    targets: tuple[Any, ...] = field(default=())
    uk_check: bytes | None = None  # keys.unlock_key_check(UK): which unlock key every slot wraps (None: older record)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "user": self.user,
            "slots": [s.to_json() for s in self.slots],
            "recovery": [r.to_json() for r in self.recovery],
            "targets": list(self.targets),
        }
        if self.uk_check is not None:
            out["uk_check"] = b64e(self.uk_check)
        return out

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def loads(cls, data: bytes) -> "Record":
        """Parse; ValueError/KeyError/TypeError on anything that is not a schema-1 record (the store names it)."""
        obj = json.loads(data.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        if obj.get("schema") != SCHEMA:
            raise ValueError(f"unknown schema version {obj.get('schema')!r}")
        if not isinstance(obj.get("user"), str):
            raise ValueError("no user name")
        slots, recovery, targets = obj.get("slots", []), obj.get("recovery", []), obj.get("targets", [])
        if not all(isinstance(x, list) for x in (slots, recovery, targets)):
            raise ValueError("slots, recovery and targets must be lists")
        check = obj.get("uk_check")
        return cls(
            obj["user"],
            tuple(Slot.from_json(s) for s in slots),
            tuple(RecoverySlot.from_json(r) for r in recovery),
            tuple(targets),
            None if check is None else b64d(check),
        )

    def slot_for(self, credential_id: bytes) -> Slot | None:
        return next((s for s in self.slots if s.credential_id == credential_id), None)

    def replace_slot(self, new: Slot) -> "Record":
        return replace(self, slots=tuple(new if s.credential_id == new.credential_id else s for s in self.slots))

    def with_(self, **changes: Any) -> "Record":
        return replace(self, **changes)

    @property
    def has_secrets(self) -> bool:
        """Something enrolled wraps an unlock key: a further slot must wrap that one."""
        return bool(self.slots or self.recovery)

    def secret_ids(self) -> frozenset[str]:
        """The credential ids of the slots and the ids of the recovery slots."""
        return frozenset([s.credential_id_text for s in self.slots] + [f"recovery:{r.id}" for r in self.recovery])

    def check_same_enrollment(self, unlock_key: bytes | None, seen: frozenset[str] = frozenset()) -> None:
        """Raise EnrollmentChanged unless a slot wrapping `unlock_key` may be added to this record, as read under
        its lock (issue 17).

        `unlock_key` None: a first enrollment (a new UK), which needs a record with nothing enrolled. Otherwise the
        record must still be the enrollment that UK came from: its `uk_check` matches, or (a record written before
        `uk_check` existed) one of the slots seen when the flow started (`seen`, from `secret_ids()`) is still
        there — every slot of a record wraps the same UK, and a removed user's slots never come back.
        """
        from .errors import EnrollmentChanged
        from .keys import unlock_key_check

        if unlock_key is None:
            if self.has_secrets:
                raise EnrollmentChanged(self.user)
            return
        if not self.has_secrets:
            raise EnrollmentChanged(self.user)
        if self.uk_check is not None:
            if not hmac.compare_digest(self.uk_check, unlock_key_check(unlock_key)):
                raise EnrollmentChanged(self.user)
        elif not self.secret_ids() & seen:
            raise EnrollmentChanged(self.user)


def _check_types(obj: Any, types: dict[str, type]) -> None:
    for name, kind in types.items():
        value = getattr(obj, name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"field {name} has the wrong type")
