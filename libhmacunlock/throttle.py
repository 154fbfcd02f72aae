"""Per-user throttling of failed PIN sign-ins, across processes (the PIN guard's last step; docs/pam.md).

Whoever can start a sign-in (`su victim` in a loop, an ssh login) could otherwise try PINs as fast as the key
answers. After each failed sign-in (a wrong PIN, or the key soft-locked by wrong PINs) the next one for that user
must wait: nothing after the first failure, then 1 s, 2 s, 4 s, ... up to CAP_S (15 min); a sign-in with the
right PIN clears it. A throttled sign-in is refused before anything is asked or sent to the key.

Usernameless sign-ins (PAM's `usernameless`) do not know the user before the PIN is sent, so they share one count,
STORE/.+usernameless.throttle (`+` is in no user name): checked before anything is asked, charged by each PIN sent
without a name, cleared by a usernameless sign-in that verified (which also clears the signed-in user's own count).
A person who fails usernameless sign-ins with their own enrolled key slows everyone's usernameless sign-ins; a
sign-in by name is not affected (each user's own count).

State: STORE/.USER.throttle, JSON {"failures": N, "last": UNIX TIME}, 0600 root, in the root-only store. Only a
process that may write the store (root) records anything; an unprivileged screen locker (the key's owner) only
reads it when it can. A file that is not ours (a link, not a regular file, writable by others) is never followed
or believed; one that does not parse counts as no failures, and the next failure replaces it. A disk too full to
write it (ENOSPC, EDQUOT) records nothing and the sign-in goes on, as with a read-only store: a full disk must not
lock the user out (the key's own retry counter and the PIN floor still bound the guesses). The count is rewritten
in place (write, then truncate), so a full disk never empties a file that already holds one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator

from .errors import SignInThrottled
from .store import READ_ONLY_ERRNOS, Store

USERNAMELESS_FILE = ".+usernameless.throttle"
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

FREE_FAILURES = 1  # a typo costs no waiting
BASE_S = 1
CAP_S = 900


def delay_after(failures: int) -> int:
    """Seconds the next sign-in waits after `failures` failed ones in a row."""
    if failures <= FREE_FAILURES:
        return 0
    return min(CAP_S, BASE_S << min(failures - FREE_FAILURES - 1, 20))


class Throttle:
    def __init__(self, store: Store, user: str | None) -> None:
        """user None: the count usernameless sign-ins share (USERNAMELESS_FILE)."""
        self.user = user
        self.path = store.side_file(user, "throttle") if user is not None else store.path / USERNAMELESS_FILE

    def check(self, now: float | None = None) -> None:
        """SignInThrottled (with the seconds left) while the last failure's wait lasts."""
        self._refuse_while_waiting(*self._read(), now)

    def charge(self, now: float | None = None) -> None:
        """A PIN is about to be sent (the PIN guard calls it after every check that could refuse it: pinguard.py):
        SignInThrottled if a failure's wait lasts (another sign-in may have failed since `check`), else one failure
        more, counted now (so that a caller who kills its own sign-in right after Enter does not get a wrong PIN for
        free; a success clears it). One step under the file's lock, so that two sign-ins cannot both pass the check
        before either counts. Where nothing can be recorded, only the check."""
        with self._locked() as fd:
            if fd is None:
                self.check(now)
                return
            failures, last = _parse(_read_fd(fd))
            self._refuse_while_waiting(failures, last, now)
            _replace(fd, {"failures": failures + 1, "last": time.time() if now is None else now})

    def _refuse_while_waiting(self, failures: int, last: float, now: float | None) -> None:
        now = time.time() if now is None else now
        wait = delay_after(failures) - max(0.0, now - min(last, now))  # a clock set back waits from now
        if wait > 0:
            raise SignInThrottled(self.user, max(1, int(wait + 0.999)))

    def succeeded(self) -> None:
        if self._read()[0] == 0:
            return  # nothing to clear: no write on the usual sign-in
        with self._locked() as fd:
            if fd is not None:
                _replace(fd, {"failures": 0, "last": 0})

    # --- the file -------------------------------------------------------------------------------------------

    def _read(self) -> tuple[int, float]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return 0, 0.0  # none yet, or not ours to read (an unprivileged locker)
        try:
            return _parse(_read_fd(fd)) if _ours(fd) else (0, 0.0)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int | None]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            if exc.errno in READ_ONLY_ERRNOS or exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):
                yield None  # not writable here, or not a file of ours: nothing recorded
                return
            raise
        try:
            if not _ours(fd):
                yield None
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)


def _ours(fd: int) -> bool:
    st = os.fstat(fd)
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_uid in (0, os.geteuid())
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and st.st_size < 4096
    )


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096)


def _parse(data: bytes) -> tuple[int, float]:
    try:
        obj = json.loads(data)
        failures, last = obj["failures"], obj["last"]
        if isinstance(failures, int) and not isinstance(failures, bool) and isinstance(last, (int, float)):
            return max(0, min(failures, 1000)), float(last)
    except (ValueError, KeyError, TypeError, RecursionError):
        pass
    return 0, 0.0


def _replace(fd: int, state: dict[str, float]) -> None:
    """Rewrite the file in place; on a full disk nothing (or, at worst, the old count) stays: never an error."""
    data = json.dumps(state).encode()
    try:
        os.pwrite(fd, data, 0)  # into the block the file already has: no new space needed for a count it holds
        os.ftruncate(fd, len(data))
    except OSError as exc:
        if exc.errno not in FULL_ERRNOS:
            raise
