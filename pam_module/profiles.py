"""The helper's profile work (issue 16): unlocking the user's profiles after a verified sign-in, and the session
events of `lock_on_logout` (PROTOCOL.md, `session=`), which lock them when the user's last session ends.

The sign-in side runs only after the verdict is decided to be a success (the unlock key is in hand); nothing here
can fail a sign-in. The session side needs no key and no PIN: libhmacunlock.sessions counts the sessions and
removes, by identifier, the keys the user's sign-ins added.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .protocol import Channel, Frame, Request, Verdict

if TYPE_CHECKING:
    from libhmacunlock.errors import TargetError
    from libhmacunlock.sessions import State
    from libhmacunlock.targets.fscrypt import Status

_Log = Callable[[str], None]  # PamInteraction.log: a line for syslog under `debug`


def unlock_profiles(chan: Channel, log: _Log, request: Request, user: str, unlock_key: bytes) -> list[str]:
    """Unlock `profile=PATTERN` expanded for `user` (the user the key unlocked) or the directories the user's record
    names (`profile_record`); note each one unlocked in the user's session state, so lock_on_logout can lock it.
    A profile that does not open is reported to the person, and the sign-in still succeeds (the person is who they
    say); the problems are returned for the verdict's log line."""
    from libhmacunlock import audit
    from libhmacunlock.targets.fscrypt import unlock_profile

    problems: list[str] = []
    try:
        directories = _directories(request, user)
    except Exception as exc:  # noqa: BLE001 - reported, never fatal to the sign-in
        problems.append(_not_unlocked(chan, log, exc))
        audit.profile_unlock_failed(user, None, type(exc).__name__)
        return problems
    if not directories:
        log(f"profile: {user}'s record names no profile directory")
        return problems
    with contextlib.ExitStack() as stack:
        state = _state(stack, log, user)
        if state is not None:
            state.signed_in(request.pid)  # in use from now on: a logout meanwhile does not lock it under us
        for directory in directories:
            try:
                unlocked = unlock_profile(directory, unlock_key)
            except Exception as exc:  # noqa: BLE001 - any failure here is reported, never fatal to sign-in
                problems.append(_not_unlocked(chan, log, exc))
                audit.profile_unlock_failed(user, directory, type(exc).__name__)
                continue
            if state is not None:
                state.add_unlocked(unlocked)
            log(f"profile {directory} unlocked")
            audit.profile_unlocked(user, directory)
    return problems


def expand(pattern: str, user: str) -> str:
    """profile=PATTERN for `user`: %u is the user, %% a percent sign, nothing else may follow a % (the module refused
    such a pattern already). ValueError when the result is not a usable directory (records.check_directory: a '.'
    or '..' made of the name)."""
    from libhmacunlock.records import check_directory

    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            escape = pattern[i + 1 : i + 2]
            if escape not in ("u", "%"):
                raise ValueError(f"profile={pattern} has an escape other than %u and %%")
            out.append(user if escape == "u" else "%")
            i += 2
            continue
        out.append(ch)
        i += 1
    path = "".join(out)
    try:
        return check_directory(path)
    except ValueError as exc:
        raise ValueError(f"profile={pattern} gives {user} no usable directory: {exc}") from None


def _directories(request: Request, user: str) -> list[str]:
    from libhmacunlock.records import check_directory

    if request.profile:
        return [expand(request.profile, user)]
    if not request.profile_record:
        return []
    from libhmacunlock.store import Store

    # what `profile setup` noted; each checked as a pattern's expansion is
    return [check_directory(d) for d in Store(request.store).read(user).profiles()]


def _state(stack: contextlib.ExitStack, log: _Log, user: str) -> State | None:
    """The user's session state, held to the end of `stack`; None (logged) when it cannot be used: the profile is
    unlocked all the same, and lock_on_logout will not know to lock it."""
    from libhmacunlock import sessions

    try:
        return stack.enter_context(sessions.state(user))
    except Exception as exc:  # noqa: BLE001 - the unlock must not depend on it
        log(f"profile: session state not usable ({type(exc).__name__}: {exc}); lock_on_logout will not lock it")
        return None


def _not_unlocked(chan: Channel, log: _Log, exc: BaseException) -> str:
    """Tell the person why their profile stays locked; the reason, for syslog."""
    from libhmacunlock.errors import HmacUnlockError

    if isinstance(exc, HmacUnlockError):
        reason = exc.message
    elif isinstance(exc, ValueError):
        reason = str(exc)
    else:
        reason = f"internal error ({type(exc).__name__})"
    log(f"profile unlock failed: {type(exc).__name__}")
    chan.send(Frame.INFO, f"Your profile was not unlocked: {reason}")
    return f"profile not unlocked: {reason}"


# --- session events (lock_on_logout) ------------------------------------------------------------------------


def serve_session(chan: Channel, request: Request) -> None:
    """One session event: count an open, or count a close and, at the user's last, lock what their sign-ins
    unlocked. Exactly one verdict: success, or system_err with the reason (the module logs either)."""
    from libhmacunlock import sessions
    from libhmacunlock.targets.fscrypt import Status

    user = request.user
    try:
        if request.pid is None:
            raise ValueError("the request names no pid")
        if request.session == "open":
            live = sessions.opened(user, request.pid)
            text = f"user {user}: session opened, {live} open" if live is not None else f"user {user}: not root"
            chan.send(Frame.VERDICT, f"{Verdict.SUCCESS.value}\n{text}")
            return
        closed = sessions.closed(user, request.pid)
    except Exception as exc:  # noqa: BLE001 - every failure is a verdict
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        chan.send(Frame.VERDICT, f"{Verdict.SYSTEM_ERR.value}\nuser {user}: session {request.session}: {message}")
        return
    if closed is None:
        chan.send(Frame.VERDICT, f"{Verdict.SUCCESS.value}\nuser {user}: not root, nothing locked")
        return
    if not closed.counted:
        text = f"user {user}: a session closed that was not counted open; nothing locked"
    elif closed.remaining:
        text = f"user {user}: session closed, {closed.remaining} still open; profiles stay unlocked"
    else:
        done = [f"{d} {r.value if isinstance(r, Status) else 'NOT locked: ' + r.message}" for d, r in closed.locked]
        text = f"user {user}: last session closed; " + ("; ".join(done) or "no profile to lock")
        _audit_locked(user, closed.locked)
    failed = any(not isinstance(r, Status) for _, r in closed.locked)
    verdict = Verdict.SYSTEM_ERR if failed else Verdict.SUCCESS
    chan.send(Frame.VERDICT, f"{verdict.value}\n{text}")


def _audit_locked(user: str, results: Sequence[tuple[str, Status | TargetError]]) -> None:
    """One audit line per profile the last logout locked (or could not)."""
    from libhmacunlock import audit
    from libhmacunlock.targets.fscrypt import Status

    for directory, result in results:
        if isinstance(result, Status):
            audit.profile_locked(user, directory, result.name.lower())
        else:
            audit.profile_lock_failed(user, directory, type(result).__name__)
