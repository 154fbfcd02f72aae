"""What each failure means to PAM (docs/pam.md has the table for admins; docs/troubleshooting.md each error).

Only the library's typed errors get a specific verdict; anything else is an internal fault (system_err).
`user_unknown` is given for two cases: no record exists for the user (PAM_IGNORE with nouserok), and a usernameless
sign-in whose key holds only credentials of names that are no account here (UnknownAccount: PAM_USER_UNKNOWN, which
the module never turns into PAM_IGNORE, nouserok or not, as no user was named). A record
that exists but is broken, tampered or unsafe is an enrolled user failing to authenticate (auth_err), never
ignored: pam-u2f's CVE-2020-24612 let nouserok skip users whose file could not be read.
"""

from __future__ import annotations

from libhmacunlock import errors as e

from .protocol import Verdict

# Checked in order: the first matching type wins (subclasses before their bases).
_TABLE: tuple[tuple[type[e.HmacUnlockError], Verdict], ...] = (
    (e.WrongPin, Verdict.AUTH_ERR),
    (e.PinSoftLocked, Verdict.AUTH_ERR),
    (e.PinBlocked, Verdict.AUTH_ERR),
    (e.PinMalformed, Verdict.AUTH_ERR),  # never sent to the key
    (e.PinFloorReached, Verdict.AUTH_ERR),  # the key is not asked: the password or recovery key decides
    (e.SignInThrottled, Verdict.AUTH_ERR),
    (e.CredentialNotOnKey, Verdict.AUTH_ERR),
    (e.AssertionInvalid, Verdict.AUTH_ERR),
    (e.ClonedKey, Verdict.AUTH_ERR),
    (e.UserPresenceFailed, Verdict.AUTH_ERR),
    (e.Cancelled, Verdict.AUTH_ERR),
    (e.AmbiguousUser, Verdict.AUTH_ERR),
    (e.UnknownAccount, Verdict.USER_UNKNOWN),  # usernameless: the key's account is not one of this machine's
    (e.RecordUnreadable, Verdict.AUTH_ERR),
    (e.RecordTampered, Verdict.AUTH_ERR),
    (e.UnsafeLocation, Verdict.AUTH_ERR),
    (e.StorePermission, Verdict.AUTHINFO_UNAVAIL),  # the helper may not read the record: not the person's fault
    (e.NoKeyFound, Verdict.AUTHINFO_UNAVAIL),
    (e.KeyRemoved, Verdict.AUTHINFO_UNAVAIL),
    (e.KeyBusy, Verdict.AUTHINFO_UNAVAIL),
    (e.KeyCommandFailed, Verdict.AUTHINFO_UNAVAIL),
    (e.KeyLacksFeature, Verdict.AUTHINFO_UNAVAIL),
    (e.PinNotSet, Verdict.AUTHINFO_UNAVAIL),
    (e.NotEnrolled, Verdict.AUTHINFO_UNAVAIL),
)


def verdict_for(exc: BaseException, *, nouserok: bool) -> tuple[Verdict, str | None]:
    """The verdict for a failed unlock, and the message to show the person (None: show nothing)."""
    if isinstance(exc, e.NoRecord) and nouserok:
        return Verdict.USER_UNKNOWN, None  # the stack moves on silently to the next method
    for kind, verdict in _TABLE:
        if isinstance(exc, kind):
            return verdict, exc.message
    if isinstance(exc, e.HmacUnlockError):
        return Verdict.SYSTEM_ERR, exc.message
    # A bug or an unexpected environment: name the type only; its text could hold values in play.
    return Verdict.SYSTEM_ERR, "Security key sign-in failed with an internal error."
