"""The audit trail: what changed who may sign in, and what went wrong at a sign-in, to syslog (facility authpriv).

One typed function per event; each writes one line `hmacunlock[PID]: EVENT key=value ...`. Never a secret: no
PIN, no unlock key, no hmac output, no recovery key or passphrase. User names are written with their control
characters escaped (a forged name cannot forge a log line); credential and slot ids are base64url, safe as they are.
Where each event is logged (one place each, docs/threat-model.md "Audit trail"): enroll, remove and recovery in the
CLI command layer; PIN failures in the CLI's error handler and in the PAM helper; clone detection and salt-rotation
write failures in the unlock flow, for both; profiles unlocked at sign-in and locked at logout in the PAM helper.
"""

from __future__ import annotations

import sys
import syslog

IDENT = "hmacunlock"
_opened = False
verbose = False  # the CLI's -v: the same lines to stderr too


def clean(text: str) -> str:
    """`text` with control characters (C0, DEL, C1) and backslashes escaped: one line, nothing a terminal obeys."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _emit(priority: int, event: str, **fields: object) -> None:
    global _opened
    parts = [event] + [f"{k}={clean(str(v))}" for k, v in fields.items() if v is not None]
    line = " ".join(parts)
    if not _opened:
        syslog.openlog(IDENT, syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        _opened = True
    try:
        syslog.syslog(priority, line)
    except OSError:  # pragma: no cover - no syslog socket: the trail is best effort, never fatal
        pass
    if verbose:
        print(f"hmacunlock: audit: {line}", file=sys.stderr)


def enrolled(user: str, credential_id: str, rp_id: str, first: bool) -> None:
    _emit(syslog.LOG_NOTICE, "enroll", user=user, credential=credential_id, rp=rp_id, first="yes" if first else "no")


def _forced(forced: bool) -> str | None:
    return "yes" if forced else None  # only when --force overrode a refusal (the last way in)


def removed_key(user: str, credential_id: str, forced: bool = False) -> None:
    _emit(syslog.LOG_NOTICE, "remove", user=user, credential=credential_id, forced=_forced(forced))


def removed_user(user: str, forced: bool = False) -> None:
    _emit(syslog.LOG_NOTICE, "remove-user", user=user, forced=_forced(forced))


def recovery_added(user: str, slot_id: str, kind: str) -> None:
    _emit(syslog.LOG_NOTICE, "recovery-add", user=user, slot=slot_id, kind=kind)


def recovery_removed(user: str, slot_id: str, forced: bool = False) -> None:
    _emit(syslog.LOG_NOTICE, "recovery-remove", user=user, slot=slot_id, forced=_forced(forced))


def luks_enrolled(user: str | None, volume: str, keyslot: int, token_type: str) -> None:
    """A keyslot that opens `volume` added: USER's (hmacunlock) or the key's own (systemd-fido2, no user)."""
    _emit(syslog.LOG_NOTICE, "luks-enroll", user=user, volume=volume, keyslot=keyslot, token=token_type)


def luks_removed(user: str | None, volume: str, keyslots: tuple[int, ...], token_type: str) -> None:
    """token_type: hmacunlock (USER's keyslots) or systemd-fido2 (no user)."""
    _emit(
        syslog.LOG_NOTICE,
        "luks-remove",
        user=user,
        volume=volume,
        keyslots=",".join(str(k) for k in keyslots) or "none",
        token=token_type,
    )


def recovery_unlocked(user: str) -> None:
    _emit(syslog.LOG_WARNING, "recovery-unlock", user=user)


def recovery_failed(user: str | None, error: str) -> None:
    _emit(syslog.LOG_WARNING, "recovery-unlock-failed", user=user, error=error)


# SignInThrottled: a sign-in refused by the per-user back-off (throttle.py) after failed PINs, the PIN not tried
PIN_FAILURES = ("WrongPin", "PinSoftLocked", "PinBlocked", "PinFloorReached", "SignInThrottled")


def failure(user: str | None, exc: BaseException, via: str) -> None:
    """Logs `exc` when it is a PIN failure (the one call the CLI's and the PAM helper's error handlers make)."""
    if type(exc).__name__ in PIN_FAILURES:
        _emit(
            syslog.LOG_WARNING,
            "pin-failure",
            user=user,
            error=type(exc).__name__,
            attempts_left=getattr(exc, "attempts_left", None),
            wait_s=getattr(exc, "wait_s", None),
            via=via,
        )


def pin_failure(user: str | None, error: str, attempts_left: int | None, via: str) -> None:
    """error: the error type's name (WrongPin, PinSoftLocked, PinBlocked, PinFloorReached); via: cli or pam."""
    _emit(syslog.LOG_WARNING, "pin-failure", user=user, error=error, attempts_left=attempts_left, via=via)


def clone_detected(user: str, stored: int, seen: int, refused: bool) -> None:
    _emit(
        syslog.LOG_ALERT if refused else syslog.LOG_WARNING,
        "cloned-key-refused" if refused else "cloned-key-warned",
        user=user,
        stored_count=stored,
        seen_count=seen,
    )


def rotation_write_failed(user: str) -> None:
    _emit(syslog.LOG_ERR, "salt-rotation-write-failed", user=user)


def key_credential_deleted(user: str | None, credential_id: str, rp_id: str | None) -> None:
    """A credential deleted on a security key (`key credentials delete`, `remove --delete-on-key`); user None: it
    belonged to nobody on this machine."""
    _emit(syslog.LOG_NOTICE, "key-credential-delete", user=user, credential=credential_id, rp=rp_id)


def key_reset(device: str) -> None:
    _emit(syslog.LOG_WARNING, "key-reset", device=device)


def profile_unlocked(user: str, directory: str) -> None:
    """A sign-in's verified unlock key unlocked `directory` (PAM's profile=)."""
    _emit(syslog.LOG_NOTICE, "profile-unlocked", user=user, dir=directory)


def profile_unlock_failed(user: str, directory: str | None, error: str) -> None:
    """The sign-in succeeded, `directory` stayed locked (None: no directory, e.g. a pattern that gives none)."""
    _emit(syslog.LOG_WARNING, "profile-unlock-failed", user=user, dir=directory, error=error)


def profile_locked(user: str, directory: str, status: str) -> None:
    """lock_on_logout at the user's last session: status locked, partially_locked (files still open: the next
    last logout finishes it), unlocked (only this user's claim went: another user added the key too)."""
    _emit(syslog.LOG_NOTICE, "profile-locked", user=user, dir=directory, status=status)


def profile_lock_failed(user: str, directory: str, error: str) -> None:
    _emit(syslog.LOG_ERR, "profile-lock-failed", user=user, dir=directory, error=error)
