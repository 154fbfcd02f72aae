"""Who has a session open, and which profiles their sign-ins unlocked: PAM's `lock_on_logout` (issue 16).

One file per user, `/run/hmacunlock/sessions/USER.json` (root's, 0600, in a directory of root's alone, 0700), read,
changed and replaced atomically under the directory's one lock (`.lock`, flock):

```
{"sessions": [{"pid": 4242, "start": 1234567, "open": 1, "pending": 0}],
 "unlocked": [{"directory": "/home/alice/private", "mount": "/home", "dev": 2049, "identifier": "<base64url>"}]}
```

A session is counted against the PAM host process that opened it (its pid and its start time in /proc, so a
reused pid is another process). `pending` counts sign-ins of that process that unlocked a profile and have not
opened their session yet. The profiles are locked when a close_session ends the user's last counted session.

Which way a stale count errs: on NOT locking. A process that is gone (crashed, killed: it never called
close_session) no longer counts — every open and close drops the entries of processes that are not alive — so a
crash does not keep a profile unlocked past the next logout of that user. A process that is alive counts, even if
it forgot its close_session: locking under a live session would make its files unreadable mid-work (new opens fail,
a save is lost), while not locking leaves the profile as it is without lock_on_logout. A close that matches no open
of its process (the state was lost, or the open went elsewhere) locks nothing. /run is emptied at boot, and so
is the kernel's keyring: the two agree.

The lock needs no key and trusts no path: what is removed is the key identifier the sign-in computed from the
user's unlock key, on the filesystem it was added to (targets.fscrypt.lock_key); another user's profile, whose key
has another identifier, cannot be locked by this user's logout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TargetError, UnsafeLocation
from .records import b64d, b64e, check_directory
from .store import check_user_name
from .targets.fscrypt import Status, Unlocked, lock_key

RUN_DIR = Path("/run/hmacunlock/sessions")
MAX_STATE_SIZE = 1 << 16
MAX_ENTRIES = 256


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22); None when it is not running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data.rsplit(b")", 1)[1].split()[19])  # fields after "(comm)" start at field 3
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Session:
    pid: int
    start: int
    open: int = 0
    pending: int = 0

    def alive(self) -> bool:
        return process_start(self.pid) == self.start


@dataclass
class State:
    """One user's sessions and unlocked profiles, as read under the lock; written back when the block ends."""

    user: str
    sessions: list[Session] = field(default_factory=list)
    unlocked: list[Unlocked] = field(default_factory=list)

    def _of(self, pid: int) -> Session | None:
        start = process_start(pid)
        if start is None:
            return None
        for s in self.sessions:
            if s.pid == pid and s.start == start:
                return s
        entry = Session(pid, start)
        self.sessions.append(entry)
        return entry

    def prune(self) -> None:
        """Forget the processes that are gone (a crashed host never closes its session), and idle entries."""
        self.sessions = [s for s in self.sessions if (s.open or s.pending) and s.alive()]

    def signed_in(self, pid: int | None) -> None:
        """A sign-in of process `pid` is about to unlock a profile: it counts as in use until its session opens."""
        self.prune()  # sign-ins on a line without lock_on_logout must not pile up entries
        entry = self._of(pid) if pid else None
        if entry is not None:
            entry.pending += 1

    def add_unlocked(self, unlocked: Unlocked) -> None:
        key = (unlocked.identifier, unlocked.dev, unlocked.directory)
        if all((u.identifier, u.dev, u.directory) != key for u in self.unlocked):
            self.unlocked.append(unlocked)

    def opened(self, pid: int) -> None:
        entry = self._of(pid)
        if entry is None:
            return  # the host is gone already: there is no session to count
        entry.open += 1
        entry.pending = max(0, entry.pending - 1)
        self.prune()

    def closed(self, pid: int) -> bool:
        """One session of `pid` closed; True when it was counted (an open of that process)."""
        entry = self._of(pid)
        matched = entry is not None and entry.open > 0
        if entry is not None and matched:
            entry.open -= 1
        self.prune()
        return matched

    @property
    def live(self) -> int:
        """Sessions open, and sign-ins on their way to one, of processes still running."""
        return sum(s.open + s.pending for s in self.sessions if s.alive())

    def to_json(self) -> dict[str, Any]:
        return {
            "sessions": [{"pid": s.pid, "start": s.start, "open": s.open, "pending": s.pending} for s in self.sessions],
            "unlocked": [
                {"directory": u.directory, "mount": u.mount, "dev": u.dev, "identifier": b64e(u.identifier)}
                for u in self.unlocked
            ],
        }

    @classmethod
    def from_json(cls, user: str, obj: Any) -> State:
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        sessions, unlocked = obj.get("sessions", []), obj.get("unlocked", [])
        if not isinstance(sessions, list) or not isinstance(unlocked, list):
            raise ValueError("sessions and unlocked must be lists")
        if len(sessions) > MAX_ENTRIES or len(unlocked) > MAX_ENTRIES:
            raise ValueError("too many entries")
        state = cls(user)
        for s in sessions:
            values = [s[k] for k in ("pid", "start", "open", "pending")]
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
                raise ValueError("a session's fields are counts")
            state.sessions.append(Session(*values))
        for u in unlocked:
            identifier = b64d(u["identifier"])
            if len(identifier) != 16 or not isinstance(u["dev"], int) or isinstance(u["dev"], bool):
                raise ValueError("an unlocked profile's identifier or device is malformed")
            state.unlocked.append(
                Unlocked(check_directory(u["directory"]), check_directory(u["mount"]), u["dev"], identifier)
            )
        return state


def _directory(directory: Path) -> Path:
    """The state directory, made if missing; UnsafeLocation unless it is a directory of ours alone."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(directory)
    except OSError as exc:
        raise UnsafeLocation(str(directory), exc.strerror or str(exc)) from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise UnsafeLocation(str(directory), "it must be a directory of root's that only root can open (0700)")
    return directory


@contextlib.contextmanager
def state(user: str, directory: Path = RUN_DIR) -> Iterator[State | None]:
    """USER's State under the lock, written back (or removed, when empty) at the end of the block. None when this
    process is not root: the state is root's (a screen locker neither counts sessions nor locks)."""
    check_user_name(user)
    if os.geteuid() != 0:
        yield None
        return
    directory = _directory(directory)
    lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        path = directory / f"{user}.json"
        current = _read(path, user)
        yield current
        _write(path, current)
    finally:
        os.close(lock_fd)


def _read(path: Path, user: str) -> State:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return State(user)
    except OSError as exc:
        raise UnsafeLocation(str(path), exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise UnsafeLocation(str(path), "it is not a private file of root's")
        data = os.read(fd, MAX_STATE_SIZE + 1)
    finally:
        os.close(fd)
    try:
        if len(data) > MAX_STATE_SIZE:
            raise ValueError("too large")
        return State.from_json(user, json.loads(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsafeLocation(str(path), f"not a session state ({type(exc).__name__})") from None


def _write(path: Path, current: State) -> None:
    if not current.sessions and not current.unlocked:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{current.user}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(current.to_json(), f)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- the three events -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Closed:
    """What a close_session did: the sessions still open, and each profile locked (or why not)."""

    remaining: int
    counted: bool  # this close matched an open of its process
    locked: tuple[tuple[str, Status | TargetError], ...] = ()  # (directory, Status, or why it could not be locked)


def opened(user: str, pid: int, directory: Path = RUN_DIR) -> int | None:
    """open_session of process `pid`: the user's live sessions now, None when not root (nothing counted)."""
    with state(user, directory) as current:
        if current is None:
            return None
        current.opened(pid)
        return current.live


def closed(user: str, pid: int, directory: Path = RUN_DIR) -> Closed | None:
    """close_session of process `pid`: when it ends the user's last session, lock what their sign-ins unlocked.
    None when not root (nothing done)."""
    with state(user, directory) as current:
        if current is None:
            return None
        counted = current.closed(pid)
        remaining = current.live
        if not counted or remaining:
            return Closed(remaining, counted)
        results: list[tuple[str, Status | TargetError]] = []
        kept: list[Unlocked] = []
        for unlocked in current.unlocked:
            try:
                status = lock_key(unlocked)
            except TargetError as exc:
                results.append((unlocked.directory, exc))
                kept.append(unlocked)  # tried again at the next last logout
                continue
            results.append((unlocked.directory, status))
            if status is Status.PARTIALLY_LOCKED:
                kept.append(unlocked)  # files still open: the next removal finishes it
        current.unlocked = kept
        return Closed(0, True, tuple(results))
