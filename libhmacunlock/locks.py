"""Run-time locks shared by processes: one LUKS volume at a time, one security key at a time (issue 17).

Lock files live in /run/hmacunlock/locks (a directory of root's, 0700). A process that cannot use it (not root)
falls back to a directory of its own — $XDG_RUNTIME_DIR/hmacunlock/locks, else /tmp/hmacunlock-UID/locks (each
part refused unless it is ours and closed to others, the last 0700) — which still serialises that user's own
processes. Lock names are hashes, so nothing
about a volume or key is readable from them. The locks are advisory flock(2) locks: a killed holder releases its
lock with its last descriptor.

A lock file is removed when its lock is let go and nobody else holds it, so the directory holds only the locks in
use (and those of killed holders): `release()` closes the descriptor, then prunes — it opens the file again, and
only if that flock succeeds at once (no other holder: not a waiter that got it, nor a forked process that shares
our descriptor) and the file is still the one at the path does it unlink it. A waiter may have opened the file
before it was unlinked; so `acquire()`, once its flock succeeds, checks that the file it holds is still the one at
the path (fstat against stat) and otherwise closes it and opens the path again.
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
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
_POLL = 0.02  # seconds between tries while waiting with a timeout


def lock_dir() -> Path | None:
    """The directory for lock files, created if missing; None when there is no safe one."""
    uid = os.geteuid()
    candidates = [(ROOT_DIR.parent.parent, ROOT_DIR.parent.name, ROOT_DIR.name)] if uid == 0 else []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if uid != 0:
        if runtime:
            candidates.append((Path(runtime), "hmacunlock", "locks"))
        candidates.append((Path("/tmp"), f"hmacunlock-{uid}", "locks"))  # noqa: S108 - each part checked: ours, closed
    for base, *parts in candidates:
        directory = _own_directory(base, parts)
        if directory is not None:
            return directory
    return None


def _own_directory(base: Path, parts: list[str]) -> Path | None:
    """base/parts..., each part made (0700) if missing and then required to be a directory of ours, not a link,
    that nobody else can write to (the last one: that nobody else can enter), so nobody else can swap anything
    below it (another user who made /tmp/hmacunlock-UID first, open to all, could replace `locks` with a link)."""
    path = base
    for i, part in enumerate(parts):
        path = path / part
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            st = os.lstat(path)
        except OSError:
            return None
        closed = 0o077 if i == len(parts) - 1 else 0o022
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & closed:
            return None
    return path


def lock_name(kind: str, identity: str) -> str:
    return f"{kind}-{hashlib.sha256(identity.encode()).hexdigest()[:24]}.lock"


class FileLock:
    """One flock'd lock file of (`kind`, `identity`). `acquire(timeout)`: None waits for as long as it takes."""

    def __init__(self, kind: str, identity: str) -> None:
        self.kind, self.identity = kind, identity
        self._fd = -1
        self._path: Path | None = None

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
        path = directory / lock_name(self.kind, self.identity)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fd = os.open(path, _OPEN | os.O_CREAT, 0o600)
            except OSError:
                return True
            try:
                if not _flock(fd, deadline):
                    os.close(fd)
                    return False
                at_path = _is_at(fd, path)
            except BaseException:
                os.close(fd)  # never an fd (and its flock) left behind
                raise
            if at_path:
                self._fd, self._path = fd, path
                return True
            os.close(fd)  # pruned while we waited for it: the lock is the file at the path now (made if missing)

    def release(self) -> None:
        """Let go of the lock, then remove its file unless someone else holds it (the module's docstring)."""
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        if self._path is not None:
            _prune(self._path)


def _flock(fd: int, deadline: float | None) -> bool:
    """flock `fd` exclusively: waiting as long as it takes (no deadline), or trying until `deadline`."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
            return True
        except BlockingIOError:
            if deadline is None or time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)


def _is_at(fd: int, path: Path) -> bool:
    """`fd` is the file now at `path` (not one pruned from it)."""
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def _prune(path: Path) -> None:
    """Unlink the lock file at `path` if nobody holds it: only while holding its flock, taken without waiting."""
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return  # gone already (another release pruned it), or not ours to open
    try:
        with contextlib.suppress(OSError):  # BlockingIOError: someone else holds it, so it is theirs to prune
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _is_at(fd, path):
                os.unlink(path)
    finally:
        os.close(fd)


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
