"""Run-time locks shared by processes: one LUKS volume at a time, one security key at a time (issue 17).

Lock files live in /run/hmacunlock/locks (a directory of root's, 0700). A process that cannot use it (not root)
falls back to a directory of its own — $XDG_RUNTIME_DIR/hmacunlock/locks, else /tmp/hmacunlock-UID/locks (0700,
refused unless it is ours) — which still serialises that user's own processes. Lock names are hashes, so nothing
about a volume or key is readable from them. The locks are advisory flock(2) locks: a killed holder releases its
lock with its last descriptor, and lock files are never removed (a waiter may hold one open).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

ROOT_DIR = Path("/run/hmacunlock/locks")


def lock_dir() -> Path | None:
    """The directory for lock files, created if missing; None when there is no safe one."""
    candidates = [ROOT_DIR] if os.geteuid() == 0 else []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if os.geteuid() != 0:
        if runtime:
            candidates.append(Path(runtime) / "hmacunlock" / "locks")
        candidates.append(Path(f"/tmp/hmacunlock-{os.geteuid()}") / "locks")  # noqa: S108 - lstat-checked below: ours, 0700
    for directory in candidates:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(directory)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            return directory
    return None


def lock_name(kind: str, identity: str) -> str:
    return f"{kind}-{hashlib.sha256(identity.encode()).hexdigest()[:24]}.lock"


class FileLock:
    """One flock'd lock file of (`kind`, `identity`). `acquire(timeout)`: None waits for as long as it takes."""

    def __init__(self, kind: str, identity: str) -> None:
        self.kind, self.identity = kind, identity
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self, timeout: float | None = None) -> bool:
        """False only when `timeout` seconds passed with someone else holding the lock. True once held — or when
        no lock directory is usable (then `held` is False and the caller goes on unserialised, as before)."""
        if self._fd >= 0:
            return True
        directory = lock_dir()
        if directory is None:
            return True
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(directory / lock_name(self.kind, self.identity), flags, 0o600)
        except OSError:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                self._fd = fd
                return True
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@contextlib.contextmanager
def held(kind: str, identity: str) -> Iterator[bool]:
    """Hold the lock of (`kind`, `identity`) for the block, waiting for it; yields False (and runs the block
    unlocked) only when no lock directory is usable."""
    lock = FileLock(kind, identity)
    try:
        lock.acquire()
        yield lock.held
    finally:
        lock.release()
