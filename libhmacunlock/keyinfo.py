"""A cache of security keys' getInfo answers, so that a sign-in need not ask again (docs/how-it-works.md, Unlock).

A key's getInfo answer changes only when its PIN is set or changed (or it is reset), so a process that signs in
again and again (the warm helper) keeps the answer it got, keyed by the device's identity: for `udp:` the spec,
for a HID key its hidraw node and the HID device behind it (a replugged key is a new HID device: a new name in
sysfs, a new device node), and checked against the AAGUIDs the user's record expects. The answer is raw CBOR, parsed
by the reader as any answer from the key would be. What the cached answer is used for never decides a success
(that is the assertion, checked against the record); a stale answer can only make a command fail, and the Key then
reads getInfo again and retries once (device.py).

`SharedInfoCache` is one anonymous shared memory mapping made by the warm helper's daemon before it forks its
children: every child sees what any child learnt, nothing is on disk, and it goes with the daemon. A torn entry
(two children writing at once) fails its checksum and is a miss.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from typing import Protocol

from fido2 import cbor

MAX_ENTRIES = 16
SHARED_SIZE = 64 * 1024
_HEADER = struct.Struct(">I32s")  # payload length, SHA-256 of the payload


class InfoCache(Protocol):
    def get(self, identity: str) -> bytes | None:
        """The raw getInfo answer (CBOR) last stored for this device identity, or None."""

    def put(self, identity: str, raw: bytes) -> None:
        """Remember this device identity's getInfo answer."""

    def forget(self, identity: str) -> None:
        """Drop what is remembered for this device identity."""


class MemoryInfoCache:
    """A cache in this process only (tests; a long-lived process that signs in itself)."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    def get(self, identity: str) -> bytes | None:
        return self.entries.get(identity)

    def put(self, identity: str, raw: bytes) -> None:
        self.entries.pop(identity, None)
        self.entries[identity] = bytes(raw)
        while len(self.entries) > MAX_ENTRIES:
            del self.entries[next(iter(self.entries))]

    def forget(self, identity: str) -> None:
        self.entries.pop(identity, None)


class SharedInfoCache:
    """The same, in a MAP_SHARED anonymous mapping: made before fork(), shared by the process and its children."""

    def __init__(self, size: int = SHARED_SIZE) -> None:
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def _load(self) -> dict[str, bytes]:
        length, digest = _HEADER.unpack_from(self._map, 0)
        if not length or length > len(self._map) - _HEADER.size:
            return {}
        payload = self._map[_HEADER.size : _HEADER.size + length]
        if hashlib.sha256(payload).digest() != digest:
            return {}  # torn by a concurrent writer, or never written: a miss
        try:
            entries = cbor.decode(payload)
        except Exception:  # noqa: BLE001 - whatever is there, a miss
            return {}
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, bytes)}

    def _store(self, entries: dict[str, bytes]) -> None:
        while len(entries) > MAX_ENTRIES:
            del entries[next(iter(entries))]
        payload = cbor.encode(entries)
        if len(payload) > len(self._map) - _HEADER.size:
            entries = {}
            payload = cbor.encode(entries)
        self._map[_HEADER.size : _HEADER.size + len(payload)] = payload
        self._map[: _HEADER.size] = _HEADER.pack(len(payload), hashlib.sha256(payload).digest())

    def get(self, identity: str) -> bytes | None:
        return self._load().get(identity)

    def put(self, identity: str, raw: bytes) -> None:
        entries = self._load()
        entries.pop(identity, None)
        entries[identity] = bytes(raw)
        self._store(entries)

    def forget(self, identity: str) -> None:
        entries = self._load()
        if entries.pop(identity, None) is not None:
            self._store(entries)


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
