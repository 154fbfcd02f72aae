"""A cache of security keys' getInfo answers, so that a sign-in need not ask again (docs/how-it-works.md, Unlock).

A key's getInfo answer changes only when its PIN is set or changed (or it is reset), so a process that signs in
again and again (the warm helper) keeps the answer it got, keyed by the device's identity: for `udp:` the spec,
for a HID key its hidraw node and the HID device behind it (a replugged key is a new HID device: a new name in
sysfs, a new device node), and checked against the AAGUIDs the user's record expects. The answer is raw CBOR, parsed
by the reader as any answer from the key would be. What the cached answer is used for never decides a success
(that is the assertion, checked against the record); a stale answer can only make a command fail, and the Key then
reads getInfo again and retries once (device.py).

The same cache holds, per device identity, what the PIN guard last learnt about the key (`Witness`, kind WITNESS;
pinguard.py says what it proves and how it is used): the key's key-agreement public key after a PIN token it gave,
the attempts left read from it, the credentials seen on it, hmacunlock's count of key changes. It too only ever
saves messages: a miss, a torn or unparsable entry, or a key that contradicts it costs the messages it would have
saved.

A process that will open a key soon (a warm helper's spare child, before its connection comes) may parse the
answers the cache holds ahead (`parse_ahead`): python-fido2's parse of a getInfo answer is about a millisecond of
Python, and `parsed_info` then hands out the parsed one for exactly those bytes.

`SharedInfoCache` is one anonymous shared memory mapping made by the warm helper's daemon before it forks its
children: every child sees what any child learnt, nothing is on disk, and it goes with the daemon. A torn entry
(two children writing at once) fails its checksum and is a miss. Two children updating at once may lose one
update (each writes what it read plus its own): the lost one is a miss, or a witness one sign-in older.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from fido2 import cbor
from fido2.ctap2 import Info

MAX_ENTRIES = 32  # (identity, kind) pairs: 16 keys' getInfo answers and witnesses
SHARED_SIZE = 64 * 1024
_HEADER = struct.Struct(">I32s")  # payload length, SHA-256 of the payload
INFO = "info"  # the raw getInfo answer
WITNESS = "witness"  # a Witness, encoded
MAX_PRESENT = 16  # credentials a witness lists


def _slot(identity: str, kind: str) -> str:
    # an identity starts with "udp:" or "hid:"; other kinds are prefixed by a word and a space, so never collide
    return identity if kind == INFO else f"{kind} {identity}"


class InfoCache(Protocol):
    def get(self, identity: str, kind: str = INFO) -> bytes | None:
        """What was last stored for this device identity (the raw getInfo answer, CBOR; or `kind`'s), or None."""

    def put(self, identity: str, raw: bytes, kind: str = INFO) -> None:
        """Remember this device identity's getInfo answer (or `kind`'s bytes)."""

    def forget(self, identity: str, kind: str = INFO) -> None:
        """Drop what is remembered of `kind` for this device identity."""

    def answers(self) -> list[bytes]:
        """Every getInfo answer held now (raw CBOR)."""


class MemoryInfoCache:
    """A cache in this process only (tests; a long-lived process that signs in itself)."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    def get(self, identity: str, kind: str = INFO) -> bytes | None:
        return self.entries.get(_slot(identity, kind))

    def put(self, identity: str, raw: bytes, kind: str = INFO) -> None:
        slot = _slot(identity, kind)
        self.entries.pop(slot, None)
        self.entries[slot] = bytes(raw)
        while len(self.entries) > MAX_ENTRIES:
            del self.entries[next(iter(self.entries))]

    def forget(self, identity: str, kind: str = INFO) -> None:
        self.entries.pop(_slot(identity, kind), None)

    def answers(self) -> list[bytes]:
        return [raw for slot, raw in self.entries.items() if _is_info(slot)]


class SharedInfoCache:
    """The same, in a MAP_SHARED anonymous mapping: made before fork(), shared by the process and its children."""

    def __init__(self, size: int = SHARED_SIZE) -> None:
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._decoded: tuple[bytes, dict[str, bytes]] = (b"", {})  # the last payload's digest, and its entries

    def _load(self) -> dict[str, bytes]:
        length, digest = _HEADER.unpack_from(self._map, 0)
        if not length or length > len(self._map) - _HEADER.size:
            return {}
        payload = self._map[_HEADER.size : _HEADER.size + length]
        if hashlib.sha256(payload).digest() != digest:
            return {}  # torn by a concurrent writer, or never written: a miss
        if digest == self._decoded[0]:
            return dict(self._decoded[1])  # the payload decoded last time (a sign-in reads the mapping often)
        try:
            entries = cbor.decode(payload)
        except Exception:  # noqa: BLE001 - whatever is there, a miss
            return {}
        if not isinstance(entries, dict):
            return {}
        valid = {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, bytes)}
        self._decoded = (digest, valid)
        return dict(valid)

    def _store(self, entries: dict[str, bytes]) -> None:
        while len(entries) > MAX_ENTRIES:
            del entries[next(iter(entries))]
        payload = cbor.encode(entries)
        if len(payload) > len(self._map) - _HEADER.size:
            entries = {}
            payload = cbor.encode(entries)
        self._map[_HEADER.size : _HEADER.size + len(payload)] = payload
        self._map[: _HEADER.size] = _HEADER.pack(len(payload), hashlib.sha256(payload).digest())

    def get(self, identity: str, kind: str = INFO) -> bytes | None:
        return self._load().get(_slot(identity, kind))

    def put(self, identity: str, raw: bytes, kind: str = INFO) -> None:
        slot = _slot(identity, kind)
        entries = self._load()
        entries.pop(slot, None)
        entries[slot] = bytes(raw)
        self._store(entries)

    def forget(self, identity: str, kind: str = INFO) -> None:
        entries = self._load()
        if entries.pop(_slot(identity, kind), None) is not None:
            self._store(entries)

    def answers(self) -> list[bytes]:
        return [raw for slot, raw in self._load().items() if _is_info(slot)]


def _is_info(slot: str) -> bool:
    return slot.startswith(("udp:", "hid:"))  # an INFO slot is the bare identity (_slot)


_PARSED: dict[bytes, Info] = {}  # parse_ahead's answers, by their raw CBOR


def parse_ahead(cache: InfoCache) -> None:
    """Parse every getInfo answer `cache` holds now, for `parsed_info` (an answer that does not parse is left to
    the reader, which forgets it)."""
    for raw in cache.answers()[:MAX_ENTRIES]:
        try:
            _PARSED[raw] = _parse_info(raw)
        except Exception:  # noqa: BLE001, S112 - the reader parses it again and says so
            continue


def parsed_info(raw: bytes) -> Info:
    """A raw getInfo answer parsed as python-fido2 parses one from the key (the one parse_ahead made for exactly
    these bytes, if any); ValueError, TypeError, ... if it does not parse."""
    parsed = _PARSED.get(raw)
    return parsed if parsed is not None else _parse_info(raw)


def _parse_info(raw: bytes) -> Info:
    answer = cbor.decode(raw)
    if not isinstance(answer, dict):
        raise TypeError("not a map")
    return Info.from_dict(answer)


def credential_id_digest(rp_id: str, credential_id: bytes) -> bytes:
    """How a witness names a credential: SHA-256 of the RP id, a NUL and the credential id."""
    return hashlib.sha256(rp_id.encode() + b"\0" + credential_id).digest()


@dataclass(frozen=True)
class Witness:
    """What a sign-in whose PIN token succeeded learnt about the key (pinguard.py, the key-agreement witness).

    protocol, agreement: the PIN/UV protocol and SHA-256 of the key's key-agreement public key that token was made
    under (a key makes a new one at every power-up and every PIN mismatch, and keeps it across a success);
    max_seen: the highest getPinRetries answer read from the key while it had this agreement (0: none read);
    present: credential_id_digest()s of credentials an assertion showed on the key at this agreement;
    changes: hmacunlock's count of changes to what is on a key (STORE/.keys.changes) then, or None when unknown.
    """

    protocol: int
    agreement: bytes
    max_seen: int = 0
    present: frozenset[bytes] = frozenset()
    changes: int | None = None

    def is_for(self, protocol: int, agreement: bytes) -> bool:
        """The key still has the agreement this witness saw (same protocol, same public key)."""
        return self.protocol == protocol and hmac.compare_digest(self.agreement, agreement)

    def holds_any(self, credentials: Iterable[tuple[str, bytes]]) -> bool:
        return any(credential_id_digest(rp, cid) in self.present for rp, cid in credentials)

    def encode(self) -> bytes:
        fields: dict[int, Any] = {1: self.protocol, 2: self.agreement, 3: self.max_seen, 4: sorted(self.present)}
        if self.changes is not None:
            fields[5] = self.changes
        return bytes(cbor.encode(fields))

    @classmethod
    def decode(cls, raw: bytes) -> Witness | None:
        """The witness `encode` made, or None for anything else (a miss)."""
        try:
            fields = cbor.decode(raw)
        except Exception:  # noqa: BLE001 - whatever is there, a miss
            return None
        if not isinstance(fields, dict):
            return None
        protocol, agreement, max_seen, present = (fields.get(k) for k in (1, 2, 3, 4))
        changes = fields.get(5)
        if not (
            _uint(protocol)
            and isinstance(agreement, bytes)
            and len(agreement) == 32
            and _uint(max_seen)
            and isinstance(present, list)
            and len(present) <= MAX_PRESENT
            and all(isinstance(p, bytes) and len(p) == 32 for p in present)
            and (changes is None or _uint(changes))
        ):
            return None
        return cls(protocol, agreement, max_seen, frozenset(present), changes)


def _uint(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def hid_identity(path: str) -> str | None:
    """A hidraw node's identity: path, device number, inode and change time of the node, and the HID device it
    belongs to (/sys/class/hidraw/NAME/device, whose name ends in a number the kernel never reuses while up).
    None if the node cannot be looked at (then nothing is cached)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    sysfs = os.path.realpath(f"/sys/class/hidraw/{os.path.basename(path)}/device")
    return f"hid:{path}:{st.st_rdev}:{st.st_ino}:{st.st_ctime_ns}:{sysfs}"
