"""Per-user records on disk (docs/library.md, Store rules).

Layout: STORE/USER.json (the record), STORE/.USER.lock (flock target: serialises every read-decide-write of the
record; never removed), STORE/.USER.throttle (failed sign-ins, throttle.py), STORE/.pin.lock (the PIN guard's lock
and PIN generation, pinguard.py), STORE/.keys.changes (a count of hmacunlock's changes to what is on a key, written
under the PIN lock; made by the first such change, pinguard.key_changed). Whether this process may write is decided
by trying (EACCES, EPERM or EROFS: read-only), never by os.access, which asks about the real uid: under su the real
uid is the caller's, and the sign-in must rotate as root's does.
Reading refuses what a non-root user could have planted or changed (pam-u2f CVE-2019-12209 class):
- the store directory: a symlink, writable by group/other, or owned by someone other than root or us;
- a record: a symlink (O_NOFOLLOW), not a regular file, writable by group/other, or owned by someone other than
  root or the running user. As root that means root only; an unprivileged helper (a screen locker) also accepts
  a record it owns itself, which is harmless: a user who can write their own record can only lock themselves out.
Writing: a unique temp file in the same directory (stale ones of the user removed), fsync, rename, fsync the
directory; a failed write leaves the old record.
Records are written 0600 root:root, or 0640 root:USER when USER has a private group of their own name, so an
unprivileged screen locker running as USER can read (never write) it. A record holds no usable secret offline.
A record that does not parse is reported with its path and never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from .errors import (
    NoRecord,
    NotEnrolled,
    RecordTampered,
    RecordUnreadable,
    StorePermission,
    StoreWriteFailed,
    UnsafeLocation,
)
from .records import Record

DEFAULT_STORE = "/var/lib/hmacunlock"
MAX_RECORD_SIZE = 1 << 20
SUFFIX = ".json"
TEMP_SUFFIX = ".tmp"
READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
KEY_CHANGES = ".keys.changes"


class PinLock:
    """STORE/.pin.lock held: its first 8 bytes count the PINs hmacunlock sent through the PIN guard (the PIN
    generation), bumped under the exclusive lock before each one, so a reader under the lock knows whether a PIN may
    have been sent since it last looked (pinguard.py). An empty file is generation 0."""

    def __init__(self, fd: int, exclusive: bool, directory: Path | None = None) -> None:
        self._fd = fd
        self._exclusive = exclusive
        self._directory = directory

    def generation(self) -> int | None:
        """The PIN generation, or None when the file does not hold one (read failed, torn or foreign content)."""
        try:
            data = os.pread(self._fd, 9, 0)
        except OSError:
            return None
        if not data:
            return 0
        return int.from_bytes(data, "big") if len(data) == 8 else None

    def bump(self) -> int | None:
        """One more PIN may be sent: the generation + 1 (a file that held none restarts the count at 1; a reader
        that saw None re-reads anyway), returned. Only under the exclusive lock. Where that cannot be written (a
        full disk: the sign-in must still work), the file is marked as holding no generation (a sparse 9th byte,
        which needs no space), so every reader reads the attempts again, and None is returned; only if that fails
        too, StoreWriteFailed (no PIN is sent that a reader could miss)."""
        if not self._exclusive:
            raise RuntimeError("the PIN generation is bumped only under the exclusive PIN lock")
        generation = (self.generation() or 0) + 1
        try:
            os.pwrite(self._fd, generation.to_bytes(8, "big"), 0)
            os.ftruncate(self._fd, 8)
        except OSError:
            try:
                os.ftruncate(self._fd, 9)
            except OSError as exc:
                raise StoreWriteFailed(".pin.lock", exc.strerror or str(exc)) from None
            return None
        return generation

    def key_changes(self) -> int | None:
        """How often hmacunlock changed what is on a key (STORE/.keys.changes: 8 bytes; no file = 0), or None when
        that is not known (the file holds something else, is a link, cannot be read)."""
        if self._directory is None:
            return None
        try:
            fd = os.open(self._directory / KEY_CHANGES, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return 0
        except OSError:
            return None
        try:
            data = os.pread(fd, 9, 0)
        except OSError:
            return None
        finally:
            os.close(fd)
        return int.from_bytes(data, "big") if len(data) == 8 else None

    def bump_key_changes(self) -> None:
        """hmacunlock is about to change what is on a key: the count + 1, under the exclusive lock. Where that
        cannot be written, the file is marked as holding no count (a sparse 9th byte: every reader then doubts);
        only if that fails too, StoreWriteFailed, and the caller must not change the key."""
        if not self._exclusive or self._directory is None:
            raise RuntimeError("key changes are counted only under the exclusive PIN lock")
        count = (self.key_changes() or 0) + 1
        path = self._directory / KEY_CHANGES
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreWriteFailed(str(path), exc.strerror or str(exc)) from None
        try:
            try:
                os.pwrite(fd, count.to_bytes(8, "big"), 0)
                os.ftruncate(fd, 8)
            except OSError:
                try:
                    os.ftruncate(fd, 9)
                except OSError as exc:
                    raise StoreWriteFailed(str(path), exc.strerror or str(exc)) from None
        finally:
            os.close(fd)


class Stamp(NamedTuple):
    """What a record file is, on disk: any write (always a rename: a new inode), edit, chmod or chown changes it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_user_name(user: str) -> str:
    """A user name that is safe as a file name: no '/', NUL, control characters, leading dot, nor empty."""
    if not isinstance(user, str) or not user or user in (".", "..") or user.startswith("."):
        raise UnsafeLocation(repr(user), "not a usable user name")
    if "/" in user or any(ord(ch) < 32 or ord(ch) == 127 for ch in user) or len(user) > 200:
        raise UnsafeLocation(repr(user), "a user name cannot contain '/' or control characters")
    return user


class Store:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path if path is not None else DEFAULT_STORE)

    @classmethod
    def of(cls, store: Store | str | os.PathLike[str] | None) -> Store:
        return store if isinstance(store, Store) else cls(store)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def record_path(self, user: str) -> Path:
        return self.path / (check_user_name(user) + SUFFIX)

    # --- checks -----------------------------------------------------------------------------------------------

    def _check_dir(self, create: bool = False) -> bool:
        """True if the directory exists and is safe; False if missing (and not created). UnsafeLocation if unsafe."""
        try:
            st = os.lstat(self.path)
        except PermissionError:  # a directory above it cannot be searched by this user
            raise StorePermission(str(self.path), "look at the store") from None
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.makedirs(self.path, mode=0o711, exist_ok=True)
                os.chmod(self.path, 0o711)  # noqa: S103 - search only, no listing: the umask may have taken the search bit an unprivileged locker needs
            except OSError as exc:
                raise StoreWriteFailed(str(self.path), exc.strerror or str(exc)) from None
            st = os.lstat(self.path)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeLocation(str(self.path), "the store directory is a symbolic link")
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeLocation(str(self.path), "the store is not a directory")
        _check_owner_mode(str(self.path), st, "store directory")
        return True

    # --- reading ----------------------------------------------------------------------------------------------

    def exists(self, user: str) -> bool:
        """False only when the record is really absent: any other failure to look is RecordUnreadable, because
        "not enrolled" lets PAM's nouserok skip this user (CVE-2020-24612 class)."""
        if not self._check_dir():
            return False
        path = self.record_path(user)
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except PermissionError:
            raise StorePermission(str(path), "look at the record") from None
        except OSError as exc:
            raise RecordUnreadable(str(path), exc.strerror or str(exc)) from None
        return True

    def read(self, user: str) -> Record:
        return self.read_stamped(user)[0]

    def stamp(self, user: str) -> Stamp | None:
        """The record file's Stamp now (one lstat), None if it is not there: equal to the Stamp read_stamped gave
        means the Record it gave is still the one on disk (unlock compares them under the lock, not re-reading)."""
        try:
            return Stamp.of(os.lstat(self.record_path(user)))
        except OSError:
            return None

    def read_stamped(self, user: str) -> tuple[Record, Stamp]:
        """The record and the Stamp of the very file it was read from."""
        path = self.record_path(user)
        if not self._check_dir():
            raise NoRecord(user, f"no store at {self.path}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise NoRecord(user) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeLocation(str(path), "the record is a symbolic link") from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise StorePermission(str(path), "read the record") from None
            raise RecordUnreadable(str(path), exc.strerror or str(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeLocation(str(path), "the record is not a regular file")
            _check_owner_mode(str(path), st, "record")
            data = os.read(fd, MAX_RECORD_SIZE + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_RECORD_SIZE:
            raise RecordUnreadable(str(path), "it is larger than any record")
        try:
            record = Record.loads(data)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, UnicodeDecodeError) else "not UTF-8"
            raise RecordUnreadable(str(path), f"not a valid record ({reason})") from None
        if record.user != user:
            raise RecordTampered(str(path), f"it names user {record.user!r}")
        return record, Stamp.of(st)

    def users(self, hint: str | None = None) -> list[str]:
        """The enrolled user names. Listing the store needs root (it is 0711): StorePermission otherwise,
        with `hint` (what to do instead) in its message."""
        if not self._check_dir():
            return []
        names = []
        try:
            entries = os.listdir(self.path)
        except PermissionError:
            raise StorePermission(str(self.path), "list the users in", hint or "run it as root") from None
        for entry in sorted(entries):
            if entry.endswith(SUFFIX) and not entry.startswith("."):
                names.append(entry[: -len(SUFFIX)])
        return names

    # --- writing ----------------------------------------------------------------------------------------------

    def side_file(self, user: str, what: str) -> Path:
        """STORE/.USER.WHAT: a file of the store's own about USER (lock, throttle), never a record."""
        return self.path / f".{check_user_name(user)}.{what}"

    def check_writable(self, user: str, command: str = "hmacunlock") -> None:
        """Refuse, before any PIN or touch, a write this process could not make: StorePermission naming the fix.

        The store directory (or, when it does not exist yet, the nearest directory that does, where it would be
        made) must be writable and searchable; an existing record must be readable (it is read before the write).
        """
        self.record_path(user)  # the name first
        hint = f"run it as root ('sudo {command}')"
        probe = self.path
        while not os.path.lexists(probe) and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK | os.X_OK):
            raise StorePermission(str(self.path), "write to the store", hint)
        if probe == self.path and self.exists(user) and not os.access(self.record_path(user), os.R_OK):
            raise StorePermission(str(self.record_path(user)), "read the record", hint)

    @contextlib.contextmanager
    def locked(self, user: str, *, for_write: bool = False) -> Iterator[bool]:
        """Hold USER's lock; yields whether this process may write the record (False when unprivileged).

        `for_write`: a flow that will write (enroll, recovery add, remove): the store directory is created first
        (0711, owned by us), so a missing store is locked like any other, and failing to lock is StoreWriteFailed
        instead of an unlocked False. Read, decide and write all happen inside this block (issue 17).
        """
        check_user_name(user)
        lock = self.side_file(user, "lock")
        if for_write:
            self._check_dir(create=True)
            try:
                fd: int | None = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreWriteFailed(str(lock), exc.strerror or str(exc)) from None
        else:
            fd = self._open_lock(lock) if self._check_dir() else None
        if fd is None:
            yield False  # e.g. a root-owned store seen by an unprivileged screen locker: read-only
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def pin_lock(self, shared: bool = False) -> Iterator[PinLock | None]:
        """The PIN guard's lock (one for the machine: one key may hold several users' credentials); held only for
        the messages that spend a PIN attempt (exclusive) or read the attempts left (`shared`). Yields None,
        unlocked, where this process may not write the store (an unprivileged screen locker: the key's owner, not
        an attacker). The file also holds the PIN generation (PinLock)."""
        fd = self._open_lock(self.path / ".pin.lock") if self._check_dir() else None
        if fd is None:
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield PinLock(fd, not shared, self.path)
        finally:
            os.close(fd)

    def _open_lock(self, path: Path) -> int | None:
        """The lock file opened for writing, or None when this process may not write here (tried, not guessed)."""
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in READ_ONLY_ERRNOS or exc.errno == errno.ELOOP:
                return None  # ELOOP: a planted link is never followed; the sign-in stands, the rotation waits
            raise StoreWriteFailed(str(path), exc.strerror or str(exc)) from None

    def settled(self, user: str) -> None:
        """Return once no process holds USER's lock: a sign-in writes its rotated record after its verdict, under
        the lock it took before the assertion, so after a sign-in this waits for exactly that write (the demo and
        tests read the record then). Nothing to wait for if the lock file is not there."""
        try:
            fd = os.open(self.path / f".{check_user_name(user)}.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

    def write(self, record: Record) -> None:
        """Replace USER's record atomically; call it inside `locked(USER)`.

        The temp file has a unique name (mkstemp in the store directory), and a temp file of USER's left by a
        process killed mid-write is removed here: under the lock no other writer of USER's record is running.
        StoreWriteFailed before the rename leaves the previous record as it was; after it (`replaced`), only the
        directory fsync failed: the new record is in place, and after a crash either record is whole.
        """
        path = self.record_path(record.user)
        self._check_dir(create=True)
        self._clean_temp_files(record.user)
        tmp = ""
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{record.user}{SUFFIX}.", suffix=TEMP_SUFFIX, dir=self.path)
            try:
                _write_all(fd, record.dumps())
                _set_owner(fd, record.user)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError as exc:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise StoreWriteFailed(str(path), exc.strerror or str(exc)) from None
        try:
            _fsync_dir(self.path)
        except OSError as exc:
            raise StoreWriteFailed(str(path), exc.strerror or str(exc), replaced=True) from None

    def _clean_temp_files(self, user: str) -> None:
        """Remove USER's stale temp files (`.USER.json.XXXXXXXX.tmp`, and the older `.USER.json.PID.tmp`)."""
        pattern = re.compile(re.escape(f".{user}{SUFFIX}.") + r"[A-Za-z0-9_]+" + re.escape(TEMP_SUFFIX))
        try:
            names = os.listdir(self.path)
        except OSError:
            return
        for name in names:
            if pattern.fullmatch(name):
                with contextlib.suppress(OSError):
                    os.unlink(self.path / name)

    def remove(self, user: str) -> None:
        path = self.record_path(user)
        if not self._check_dir() or not os.path.lexists(path):
            raise NotEnrolled(user)
        try:
            os.unlink(path)  # the lock file stays: another process may hold or wait for a lock on it
            _fsync_dir(self.path)
        except OSError as exc:
            raise StoreWriteFailed(str(path), exc.strerror or str(exc)) from None


def _check_owner_mode(path: str, st: os.stat_result, what: str) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeLocation(path, f"the {what} is owned by uid {st.st_uid}, not root")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeLocation(path, f"the {what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _set_owner(fd: int, user: str) -> None:
    """0640 root:USER when USER has a private group of the same name (screen lockers read it), else 0600."""
    if os.geteuid() != 0:
        return
    import grp
    import pwd

    try:
        gid = pwd.getpwnam(user).pw_gid
        private = grp.getgrgid(gid).gr_name == user
    except KeyError:
        private = False
    if private:
        os.fchown(fd, 0, gid)
        os.fchmod(fd, 0o640)
    else:
        os.fchown(fd, 0, 0)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
