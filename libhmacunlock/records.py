"""The per-user record: schema version 1, as stored in STORE/USER.json.

```
{"schema": 1, "user": "alice",
 "slots": [{"credential_id", "rp_id", "user_handle", "public_key" (COSE, CBOR), "aaguid", "sign_count",
            "require_uv", "require_up", "cred_protect", "salt", "wrapped", "created"}],   # bytes: base64url
 "recovery": [{"id", "kind": "recovery-key" | "passphrase", "kdf": {...} | null, "wrapped", "created"}],
 "targets": [{"type": "luks", "path", "uuid", "token", "created"} | {"type": "fscrypt", "path", "created"} | ...],
 "uk_check": keys.unlock_key_check(UK)}   # which UK every slot wraps (absent in records older than issue 17)
```
`targets`: the volumes and profiles whose key derives from the user's unlock key, as `luks enroll` and `profile setup`
noted them (records older than issue 16 have none; entries of other types, a newer version's, are kept as they are).
They are what a removal checks before it takes the user's last way in (removal.py).
`wrapped` = AES-256-GCM(nonce ‖ ct ‖ tag) of the unlock key; its AAD is `aad()` below: the schema, the user and
every other field of the slot, so changing any of them makes the unwrap fail (RecordTampered). A slot may also carry
`"label"` (`enroll --label`, optional): bound by the AAD like the rest when present; a slot without one has no such
field, so slots sealed before labels existed keep their AAD and open as before.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = 1
MAX_DEPTH = 16  # JSON nesting of a whole record (a record is 4 deep; targets get room, never unbounded)
MAX_SLOTS = 64  # key slots, and recovery slots, per record
MAX_TARGETS = 256
MAX_PATH = 4095  # PATH_MAX less its NUL
UINT32 = 1 << 32
WRAPPED_SIZE = 12 + 32 + 16  # AES-256-GCM: nonce, the 32-byte unlock key, tag
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64d(text: str) -> bytes:
    """Strict base64url without padding, as b64e writes it: any other character, or a non-canonical length or
    tail, is a ValueError (the lax decoder turned '!!!!' into b'')."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url text")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64e(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# --- field checks: each names the field, none quotes a value ------------------------------------------------------


def _bytes(data: dict[str, Any], name: str, lo: int, hi: int | None = None) -> bytes:
    try:
        value = b64d(data[name])
    except ValueError:
        raise ValueError(f"field {name} is not base64url") from None
    hi = lo if hi is None else hi
    if not lo <= len(value) <= hi:
        size = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise ValueError(f"field {name} is {len(value)} bytes, not {size}")
    return value


def _int(data: dict[str, Any], name: str, lo: int, hi: int) -> int:
    value = data[name]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value < hi:
        raise ValueError(f"field {name} is not an integer from {lo} to {hi - 1}")
    return value


def _str(data: dict[str, Any], name: str, lo: int, hi: int) -> str:
    value = data[name]
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        raise ValueError(f"field {name} is not a string of {lo} to {hi} characters")
    return value


def _key_label(data: dict[str, Any]) -> str:
    from .names import MAX_KEY_LABEL, is_key_label  # it reaches prompts: the same rule as `enroll --label`

    value = data["label"]
    if not is_key_label(value):
        raise ValueError(f"field label is not a key label (1 to {MAX_KEY_LABEL} printable characters, no quotes)")
    return str(value)


def _bool(data: dict[str, Any], name: str) -> bool:
    value = data[name]
    if not isinstance(value, bool):
        raise ValueError(f"field {name} is not true or false")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _extra(data: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """The fields this version does not know: kept as they are and written back (docs/library.md, F5)."""
    known = set(known)
    return {k: v for k, v in data.items() if k not in known}


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value; ValueError beyond `limit` (checked without recursion)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                raise ValueError(f"nested deeper than {limit} levels")
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


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
    label: str | None = None  # `enroll --label`: the key's name in `list` and PIN prompts; absent when None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # fields of a newer version, kept (F5)

    _BYTES = ("credential_id", "user_handle", "public_key", "aaguid", "salt", "wrapped")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra" or (f.name == "label" and self.label is None):
                continue  # no label: no field, so a slot sealed before labels existed keeps its AAD
            value = getattr(self, f.name)
            out[f.name] = b64e(value) if f.name in self._BYTES else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Slot:
        """Every field checked for type, length and range; ValueError/KeyError names the field."""
        data = _object(data, "a slot")
        names = [f.name for f in fields(cls) if f.name != "extra"]
        return cls(
            credential_id=_bytes(data, "credential_id", 1, 1023),
            rp_id=_str(data, "rp_id", 1, 253),
            user_handle=_bytes(data, "user_handle", 1, 64),
            public_key=_bytes(data, "public_key", 1, 1024),
            aaguid=_bytes(data, "aaguid", 16),
            sign_count=_int(data, "sign_count", 0, UINT32),
            salt=_bytes(data, "salt", 32),
            wrapped=_bytes(data, "wrapped", WRAPPED_SIZE),
            require_uv=_bool(data, "require_uv") if "require_uv" in data else True,
            require_up=_bool(data, "require_up") if "require_up" in data else True,
            cred_protect=_int(data, "cred_protect", 0, 4) if "cred_protect" in data else 2,
            created=_str(data, "created", 0, 64) if "created" in data else "",
            label=_key_label(data) if "label" in data else None,
            extra=_extra(data, names),
        )

    def aad(self, user: str) -> bytes:
        """Every field but `wrapped`, those of a newer version included (they are part of the slot as written)."""
        bound = self.to_json()
        del bound["wrapped"]
        return b"hmacunlock slot\0" + _canonical({"schema": SCHEMA, "user": user, "slot": bound})

    @property
    def credential_id_text(self) -> str:
        return b64e(self.credential_id)

    def with_(self, **changes: Any) -> Slot:
        return replace(self, **changes)


@dataclass(frozen=True)
class RecoverySlot:
    id: str
    kind: str  # "recovery-key" | "passphrase"
    wrapped: bytes
    kdf: dict[str, Any] | None = None
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # fields of a newer version, kept (F5)

    KINDS = ("recovery-key", "passphrase")

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "kind": self.kind,
            "kdf": self.kdf,
            "wrapped": b64e(self.wrapped),
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecoverySlot:
        """Checked like a Slot; a passphrase slot's Argon2 parameters within keys.Argon2Params' bounds."""
        from .keys import Argon2Params

        data = _object(data, "a recovery slot")
        kind = data["kind"]
        if kind not in cls.KINDS:
            raise ValueError("field kind is not recovery-key or passphrase")
        kdf = data.get("kdf")
        if kind == "passphrase":
            Argon2Params.from_json(_object(kdf, "field kdf"))  # ValueError out of bounds
        elif kdf is not None:
            raise ValueError("field kdf of a recovery-key slot is not null")
        return cls(
            id=_str(data, "id", 1, 64),
            kind=kind,
            wrapped=_bytes(data, "wrapped", WRAPPED_SIZE),
            kdf=kdf,
            created=_str(data, "created", 0, 64) if "created" in data else "",
            extra=_extra(data, ("id", "kind", "kdf", "wrapped", "created")),
        )

    def aad(self, user: str) -> bytes:
        bound = self.to_json()
        del bound["wrapped"]
        return b"hmacunlock recovery\0" + _canonical({"schema": SCHEMA, "user": user, "slot": bound})


def check_directory(path: str) -> str:
    """An absolute path with no '.' or '..' component, no control character, at most MAX_PATH bytes: what PAM's
    profile= may expand to, and what the helper unlocks or locks. ValueError otherwise."""
    if not isinstance(path, str) or not path.startswith("/") or len(path.encode("utf-8", "replace")) > MAX_PATH:
        raise ValueError("a profile directory is an absolute path")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise ValueError("a profile directory has no control characters")
    if any(part in (".", "..") for part in path.split("/")):
        raise ValueError("a profile directory has no '.' or '..' component")
    return path


@dataclass(frozen=True)
class Target:
    """A volume or profile whose key derives from the user's unlock key: an entry of the record's `targets` whose
    type this version knows. `path` is the volume (block device or image file) or the profile directory, as it was
    given (absolute); a LUKS volume is also named by its UUID (a device path can change) and its hmacunlock token."""

    type: str  # "luks" | "fscrypt"
    path: str
    uuid: str = ""  # luks: the volume's UUID
    token: int | None = None  # luks: the id of the user's hmacunlock token on the volume
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # fields of a newer version, kept (F5)

    TYPES = ("luks", "fscrypt")
    _KNOWN = ("type", "path", "uuid", "token", "created")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "type": self.type, "path": self.path, "created": self.created}
        if self.type == "luks":
            out["uuid"] = self.uuid
            out["token"] = self.token
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        """Checked like a Slot; ValueError (naming the field) for an entry of a known type that is not well formed."""
        data = _object(data, "a target")
        kind = data["type"]
        if kind not in cls.TYPES:
            raise ValueError("field type is not luks or fscrypt")
        path = _str(data, "path", 1, 4096)
        if not path.startswith("/") or "\0" in path:
            raise ValueError("field path is not an absolute path")
        luks = kind == "luks"
        token = data.get("token") if luks else None
        if token is not None:
            token = _int(data, "token", 0, 1 << 16)
        return cls(
            type=kind,
            path=path,
            uuid=_str(data, "uuid", 0, 64) if luks and "uuid" in data else "",
            token=token,
            created=_str(data, "created", 0, 64) if "created" in data else "",
            extra=_extra(data, cls._KNOWN),
        )

    def same_as(self, other: Target) -> bool:
        """The same volume (by UUID when both have one) or the same directory."""
        if self.type != other.type:
            return False
        if self.type == "luks" and self.uuid and other.uuid:
            return self.uuid == other.uuid
        return self.path == other.path

    @property
    def description(self) -> str:
        """How a message names it: '/dev/sdb2 (LUKS2 volume, token 1)', '/home/alice/private (profile)'."""
        if self.type == "luks":
            return f"{self.path} (LUKS2 volume{'' if self.token is None else f', token {self.token}'})"
        return f"{self.path} (profile)"


def _known_target(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("type") in Target.TYPES


@dataclass(frozen=True)
class Record:
    user: str
    slots: tuple[Slot, ...] = ()
    recovery: tuple[RecoverySlot, ...] = ()
    targets: tuple[Any, ...] = field(default=())
    uk_check: bytes | None = None  # keys.unlock_key_check(UK): which unlock key every slot wraps (None: older record)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # fields of a newer version, kept (F5)

    _KNOWN = ("schema", "user", "slots", "recovery", "targets", "uk_check")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
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
    def loads(cls, data: bytes) -> Record:
        """Parse and check every field; ValueError/KeyError/TypeError on anything that is not a schema-1 record
        (the store names the file). RecursionError cannot escape: nesting is bounded (MAX_DEPTH)."""
        try:
            obj = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
        obj = _object(obj, "the record")
        _depth(obj, MAX_DEPTH)
        if obj.get("schema") != SCHEMA:
            raise ValueError(f"unknown schema version {obj.get('schema')!r}")
        user = _str(obj, "user", 1, 200)
        slots, recovery, targets = obj.get("slots", []), obj.get("recovery", []), obj.get("targets", [])
        if not all(isinstance(x, list) for x in (slots, recovery, targets)):
            raise ValueError("slots, recovery and targets must be lists")
        if len(slots) > MAX_SLOTS or len(recovery) > MAX_SLOTS or len(targets) > MAX_TARGETS:
            raise ValueError("more slots or targets than any record has")
        return cls(
            user,
            tuple(_numbered("slot", i, Slot.from_json, s) for i, s in enumerate(slots)),
            tuple(_numbered("recovery slot", i, RecoverySlot.from_json, r) for i, r in enumerate(recovery)),
            tuple(_checked_target(i, t) for i, t in enumerate(targets)),
            _bytes(obj, "uk_check", 32) if obj.get("uk_check") is not None else None,
            _extra(obj, cls._KNOWN),
        )

    def dependents(self) -> tuple[Target, ...]:
        """The volumes and profiles noted in `targets` (entries of types this version knows)."""
        return tuple(Target.from_json(t) for t in self.targets if _known_target(t))

    def profiles(self) -> tuple[str, ...]:
        """The user's profile directories (`profile setup` noted them)."""
        return tuple(t.path for t in self.dependents() if t.type == "fscrypt")

    def with_target(self, target: Target) -> Record:
        """The record noting `target` (an entry for the same volume or directory replaced)."""
        rest = self.without_target(target)
        return rest.with_(targets=(*rest.targets, target.to_json()))

    def without_target(self, target: Target) -> Record:
        kept = tuple(t for t in self.targets if not (_known_target(t) and Target.from_json(t).same_as(target)))
        return self.with_(targets=kept)

    def slot_for(self, credential_id: bytes) -> Slot | None:
        return next((s for s in self.slots if s.credential_id == credential_id), None)

    def replace_slot(self, new: Slot) -> Record:
        return replace(self, slots=tuple(new if s.credential_id == new.credential_id else s for s in self.slots))

    def with_(self, **changes: Any) -> Record:
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


def _checked_target(index: int, entry: Any) -> Any:
    """An entry of `targets` as it was read: one of a known type must parse (ValueError naming it otherwise)."""
    if _known_target(entry):
        _numbered("target", index, Target.from_json, entry)
    return entry


def _numbered(what: str, index: int, parse: Callable[[dict[str, Any]], T], data: Any) -> T:
    try:
        return parse(data)
    except KeyError as exc:
        raise ValueError(f"{what} {index} has no field {exc.args[0]}") from None
    except ValueError as exc:
        raise ValueError(f"{what} {index}: {exc}") from None


# --- slot sealing: the unlock key wrapped for one key slot (enroll seals, unlock opens and reseals) -----------


def seal_slot(user: str, slot: Slot, hmac_output: bytes, unlock_key: bytes) -> Slot:
    """The slot with UK wrapped under its hmac output; the AAD covers every other field of the slot."""
    from . import keys  # cryptography: not on the PAM helper's pre-prompt path, which reads records

    kek = keys.slot_kek(hmac_output, slot.rp_id, slot.credential_id, slot.user_handle)
    return slot.with_(wrapped=keys.wrap(kek, unlock_key, slot.aad(user)))  # aad() leaves `wrapped` out


def open_slot(user: str, slot: Slot, hmac_output: bytes, path: str) -> bytes:
    """UK from the slot; RecordTampered (naming `path`) when the slot or the key's answer is not the enrolled one."""
    from . import keys
    from .errors import RecordTampered

    kek = keys.slot_kek(hmac_output, slot.rp_id, slot.credential_id, slot.user_handle)
    try:
        return keys.unwrap(kek, slot.wrapped, slot.aad(user))
    except keys.UnwrapError:
        raise RecordTampered(
            path,
            "the key slot does not open: its fields or wrapped key were altered, "
            "or the key answered with the wrong secret",
        ) from None


def now() -> str:
    """A record's `created` timestamp: UTC, to the second, ISO 8601."""
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0).isoformat()
