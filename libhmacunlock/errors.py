"""One exception type per failure a person can act on.

Every error carries a message written for the person in front of the machine and an exit code that the CLI
returns (documented in docs/troubleshooting.md) and that the PAM helper maps to a PAM result. Nothing here
ever carries a secret: messages are built from counts, names and paths only.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """The CLI's exit codes (contract: docs/troubleshooting.md)."""

    OK = 0
    FAILURE = 1  # internal fault: a bug or an unexpected environment
    USAGE = 2  # bad command line (argparse uses 2 as well)
    WRONG_PIN = 3  # the key refused the PIN; the message shows the attempts left
    PIN_LOCKED = 4  # soft-locked (replug) or blocked (reset / recovery)
    NO_KEY = 5  # no key found, key removed, transport failure
    KEY_UNSUITABLE = 6  # key lacks a feature, PIN not set
    NOT_ENROLLED = 7  # user not enrolled, credential not on this key
    STORE = 8  # record unreadable, tampered, unsafe location, write failed
    VERIFY = 9  # assertion did not verify (signature, flags, cloned key)
    CANCELLED = 10  # user presence denied or timed out, ambiguous user with no terminal
    TARGET = 11  # LUKS / fscrypt target refused or failed
    RECOVERY = 12  # wrong recovery key or passphrase
    NOT_CONFIRMED = 13  # a destructive step was not confirmed at the terminal (no, or end of input): nothing changed


class HmacUnlockError(Exception):
    """Base of every error a person can act on."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- the PIN --------------------------------------------------------------------------------------------------


class WrongPin(HmacUnlockError):
    exit_code = ExitCode.WRONG_PIN

    def __init__(self, attempts_left: int | None) -> None:
        self.attempts_left = attempts_left
        if attempts_left is None:
            msg = "Wrong PIN."
        else:
            msg = f"Wrong PIN: {attempts_left} attempt{'s' if attempts_left != 1 else ''} left before the key locks."
        super().__init__(msg)


class PinSoftLocked(HmacUnlockError):
    exit_code = ExitCode.PIN_LOCKED

    def __init__(self) -> None:
        super().__init__("Too many wrong PINs in a row: unplug the security key and plug it back in, then try again.")


class PinBlocked(HmacUnlockError):
    exit_code = ExitCode.PIN_LOCKED

    def __init__(self) -> None:
        super().__init__(
            "The security key's PIN is blocked: no PIN attempts are left. Only a reset of the key helps, which "
            "erases its credentials; use your recovery key ('hmacunlock recovery unlock') to get in."
        )


class PinMalformed(HmacUnlockError):
    """A PIN no key accepts (fewer than 4 characters, more than 63 bytes): refused here, never sent to the key, so no
    attempt is used."""

    exit_code = ExitCode.USAGE

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}: it was not sent to the security key, no PIN attempt was used.")


class PinFloorReached(HmacUnlockError):
    """The key has `floor` PIN attempts left or fewer: nothing but an explicit choice at the console spends one."""

    exit_code = ExitCode.PIN_LOCKED

    def __init__(self, attempts_left: int, floor: int, purpose: str | None = None) -> None:
        """`purpose`: what a command wanted the PIN for ("to change it"); None: a sign-in or an unlock."""
        self.attempts_left, self.floor = attempts_left, floor
        left = f"Your security key has only {attempts_left} PIN attempt{'s' if attempts_left != 1 else ''} left"
        if purpose is None:
            text = (
                f"{left}, so it is not asked for the PIN here (a few more wrong PINs would block it for good). Sign "
                "in with your password or your recovery key, or check the PIN at the console with 'hmacunlock key "
                "verify-pin' (it asks for a touch first; the right PIN restores the attempts)."
            )
        else:
            text = (
                f"{left}, so it is not asked for the PIN {purpose} (a few more wrong PINs would block it for good). "
                "At a terminal, type yes when asked to go on anyway (or give a lower --pin-floor); 'hmacunlock key "
                "verify-pin' checks the PIN with a touch first, and the right PIN restores the attempts."
            )
        super().__init__(text)
        self.purpose = purpose


class SignInThrottled(HmacUnlockError):
    """Too many failed PIN sign-ins for this user in a row: the next one waits (a loop of `su victim` crawls)."""

    exit_code = ExitCode.PIN_LOCKED

    def __init__(self, user: str | None, wait_s: int) -> None:
        """user None: the usernameless sign-ins' shared count (throttle.Throttle.usernameless)."""
        self.user, self.wait_s = user, wait_s
        who = f"for {user}" if user is not None else "without a user name"
        super().__init__(
            f"Too many failed security key sign-ins {who} in a row: try again in {wait_s} s "
            f"({'or type your user name, ' if user is None else ''}or sign in with your password)."
        )


class PinNotSet(HmacUnlockError):
    exit_code = ExitCode.KEY_UNSUITABLE

    def __init__(self) -> None:
        super().__init__("The security key has no PIN yet: set one with 'hmacunlock key set-pin'.")


class BadArguments(HmacUnlockError):
    """Arguments that parse but do not go together (e.g. a USER with `luks enroll --systemd`)."""

    exit_code = ExitCode.USAGE


class ConfigError(HmacUnlockError):
    """A configuration file (/etc/hmacunlock/hmacunlock.conf, --config) that cannot be used: where, and why."""

    exit_code = ExitCode.USAGE

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path, self.line = path, line
        where = f"{path}, line {line}" if line else path
        super().__init__(f"Configuration file {where}: {reason}.")


class InvalidName(HmacUnlockError):
    """A user name or RP id that cannot be one (white space, an empty string, characters no account has)."""

    exit_code = ExitCode.USAGE


class PinPolicy(HmacUnlockError):
    """A new PIN the key will not accept (too short, too long, mismatched confirmation)."""

    exit_code = ExitCode.USAGE


# --- destructive steps ------------------------------------------------------------------------------------------


class ConfirmationRequired(HmacUnlockError):
    """A destructive command run with stdin not a terminal and without --yes: nobody can be asked, and a script must
    say that it means it. Raised before any PIN, touch or change."""

    exit_code = ExitCode.USAGE

    def __init__(self, command: str, action: str) -> None:
        self.command = command
        super().__init__(
            f"'{command}' is destructive and stdin is not a terminal, so nobody can confirm it: {action} "
            f"Add --yes to do it anyway ('{command} --yes'). Nothing was changed."
        )


class NotConfirmed(HmacUnlockError):
    """The person at the terminal did not confirm a destructive step (another answer, or end of input)."""

    exit_code = ExitCode.NOT_CONFIRMED

    def __init__(self) -> None:
        super().__init__("Not confirmed: nothing was changed.")


class LastWayIn(HmacUnlockError):
    """The removal would leave no slot that opens the user's unlock key while something still needs it (their
    volumes and profiles, or, for a recovery slot, anything at all): refused unless --force."""

    exit_code = ExitCode.USAGE

    def __init__(self, user: str, what: str, consequence: str, instead: str) -> None:
        self.user = user
        super().__init__(f"{what}: {consequence} {instead} or give --force. Nothing was changed.")


# --- the key --------------------------------------------------------------------------------------------------


class NoKeyFound(HmacUnlockError):
    exit_code = ExitCode.NO_KEY


class KeyRemoved(HmacUnlockError):
    """The key stopped answering mid-operation (pulled, crashed, transport error)."""

    exit_code = ExitCode.NO_KEY


class DeviceSpecInvalid(HmacUnlockError):
    """A device spec that is none of auto, hid:/dev/hidrawN, udp:HOST:PORT."""

    exit_code = ExitCode.USAGE


class KeyLacksFeature(HmacUnlockError):
    exit_code = ExitCode.KEY_UNSUITABLE

    def __init__(self, feature: str) -> None:
        self.feature = feature
        super().__init__(
            f"This security key does not support {feature}, which hmacunlock needs. "
            "Use a key with resident keys, client PIN, hmac-secret and several accounts per RP."
        )


class KeyBusy(HmacUnlockError):
    """Another sign-in had the key: it waited its turn too long, or lost its PIN token to a program that does not
    take hmacunlock's per-device lock (the key's PIN state is per key, not per caller)."""

    exit_code = ExitCode.NO_KEY

    def __init__(self) -> None:
        super().__init__("The security key was busy with another sign-in; try again.")


class KeyCommandFailed(HmacUnlockError):
    """The key answered with a CTAP error that has no more specific meaning to a person."""

    exit_code = ExitCode.NO_KEY


class UserPresenceFailed(HmacUnlockError):
    """Touch denied or not given in time."""

    exit_code = ExitCode.CANCELLED


class Cancelled(HmacUnlockError):
    exit_code = ExitCode.CANCELLED


# --- enrollment -----------------------------------------------------------------------------------------------


class NotEnrolled(HmacUnlockError):
    exit_code = ExitCode.NOT_ENROLLED

    def __init__(self, user: str, detail: str = "") -> None:
        self.user = user
        super().__init__(
            f"User {user!r} is not enrolled{(': ' + detail) if detail else ''}. Enroll with 'hmacunlock enroll USER'."
        )


class EnrollmentChanged(HmacUnlockError):
    """The user's record changed between the start of a flow and its write (removed and enrolled afresh, or a
    first enrollment elsewhere): writing now could give the user two unlock keys, so nothing was written."""

    exit_code = ExitCode.NOT_ENROLLED

    def __init__(self, user: str) -> None:
        self.user = user
        super().__init__(
            f"{user}'s enrollment changed while you were typing (another enrollment or a removal); nothing was "
            "written: start again."
        )


class NoRecord(NotEnrolled):
    """The user has no record at all: the one case PAM's `nouserok` may pass on (CVE-2020-24612 class).

    A record that is there but unreadable, broken, or without a key for this RP is never this.
    """


class NoRecoverySlot(HmacUnlockError):
    """The user is enrolled but has no recovery key or passphrase (e.g. `enroll --recovery`)."""

    exit_code = ExitCode.NOT_ENROLLED

    def __init__(self, user: str) -> None:
        self.user = user
        super().__init__(
            f"User {user!r} has no recovery key or passphrase. Authorise with an enrolled key instead "
            f"(--existing-device DEVICE), or add one first: 'hmacunlock recovery add {user}'."
        )


class SlotNotFound(HmacUnlockError):
    """An enrolled user has no key slot or recovery slot with the id given."""

    exit_code = ExitCode.NOT_ENROLLED

    def __init__(self, user: str, slot_id: str, what: str = "key with credential id") -> None:
        self.user, self.slot_id = user, slot_id
        super().__init__(
            f"User {user!r} has no {what} {slot_id!r}; 'hmacunlock list' shows {user}'s keys and recovery "
            "slots. Nothing was changed."
        )


class CredentialNotOnKey(HmacUnlockError):
    exit_code = ExitCode.NOT_ENROLLED

    def __init__(self, user: str | None = None) -> None:
        self.user = user
        who = f"user {user!r}" if user else "any enrolled user"
        super().__init__(f"This security key holds no credential for {who}: is it the key you enrolled?")


class NoKeyHoldsCredential(CredentialNotOnKey):
    """The up=false probe before the PIN found no plugged-in key holding the user's credential: nobody is asked for
    a PIN that no key here could check."""

    def __init__(self, user: str | None = None) -> None:
        super().__init__(user)
        who = f"{user}'s credential" if user else "an enrolled credential"
        self.message = (
            f"No security key holding {who} is plugged in: plug in the key you enrolled. "
            "No PIN was asked, no attempt was used."
        )
        self.args = (self.message,)


class UnknownAccount(HmacUnlockError):
    """Usernameless PAM sign-in: the key holds only credentials enrolled for names that are no account on this
    machine (removed with userdel, or a store copied from elsewhere). Found by the up=false probe: no PIN asked.
    `users` (for the log, not the message): the enrolled names that are no account here."""

    exit_code = ExitCode.NOT_ENROLLED

    def __init__(self, users: list[str]) -> None:
        self.users = users
        super().__init__(
            "This security key is enrolled for an account that does not exist on this machine: type your user "
            "name, or ask the administrator. No PIN was asked, no attempt was used."
        )


# --- the key's credentials (`hmacunlock key credentials`, `key reset`) -------------------------------------------


class CredentialExcluded(HmacUnlockError):
    """makeCredential's excludeList matched: the key already holds one of the credentials it was told to refuse."""

    exit_code = ExitCode.USAGE

    def __init__(self) -> None:
        super().__init__("The security key already holds one of the credentials it was asked not to duplicate.")


class KeyCredentialNotFound(HmacUnlockError):
    """`key credentials delete ID`: the key holds no discoverable credential with that id."""

    exit_code = ExitCode.NOT_ENROLLED

    def __init__(self, credential_id: str, device: str) -> None:
        self.credential_id = credential_id
        super().__init__(
            f"The security key ({device}) holds no credential {credential_id!r}; 'hmacunlock key credentials "
            f"--device {device}' lists the ones it holds. Nothing was deleted."
        )


class ResetNotAllowed(HmacUnlockError):
    """authenticatorReset refused with NOT_ALLOWED: keys reset only within about 10 s of being plugged in."""

    exit_code = ExitCode.CANCELLED

    def __init__(self) -> None:
        super().__init__(
            "The security key refused the reset: keys take a reset only within about 10 seconds of being plugged "
            "in. Unplug it, plug it back in, and run 'hmacunlock key reset' again at once (then touch the key). "
            "Nothing was erased."
        )


class CredentialHiddenFromProbe(NoKeyHoldsCredential):
    """No plugged-in key showed the user's credentials to the up=false probe, and some of them were enrolled with
    credProtect 3 (by an older version): a key hides such a credential from every probe without the PIN, so the PIN
    guard can never find it, and it asks no PIN it cannot place."""

    def __init__(self, hidden: Sequence[tuple[str, str]], user: str | None = None) -> None:
        super().__init__(user)
        self.hidden = tuple(hidden)  # (user, credential id) of each credProtect-3 slot
        slots = ", ".join(f"{u}'s {c}" for u, c in self.hidden)
        u, c = self.hidden[0]
        self.message = (
            f"No plugged-in key showed an enrolled credential to the check before the PIN, and {slots} was enrolled "
            "with credProtect 3, which a key hides from every check made without the PIN: hmacunlock asks no PIN "
            "before it has found the key holding the credential, so that slot can never sign in. Remove it and its "
            f"credential on the key ('hmacunlock remove {u} --credential {c}'), then enroll the key again with the "
            f"default credProtect 2, authorised by another enrolled key or the recovery key ('hmacunlock enroll {u} "
            "--existing-device SPEC' or '--recovery'). No PIN was asked, no attempt was used."
        )
        self.args = (self.message,)


class CredProtectUnsupported(HmacUnlockError):
    """enroll --cred-protect 3: the key would hide the credential from the PIN guard's probe (no PIN), so no
    sign-in could ever find it before asking the PIN."""

    exit_code = ExitCode.USAGE

    def __init__(self, level: int) -> None:
        self.level = level
        super().__init__(
            f"credProtect {level} is refused: a key hides such a credential from every check made without the PIN, "
            "and hmacunlock finds the key holding the credential before it asks a PIN (so that no attempt is spent "
            "on a key that cannot use it); that credential could never sign in. The default, 2, already keeps the "
            "credential unlisted and unusable without its credential id, and every unlock asks the PIN anyway. "
            "Nothing was asked of the key and nothing was changed."
        )


class AmbiguousUser(HmacUnlockError):
    """Usernameless unlock found several enrolled accounts and nobody can be asked which."""

    exit_code = ExitCode.CANCELLED

    def __init__(self, users: list[str]) -> None:
        self.users = users
        super().__init__(
            "This key holds several enrolled accounts (" + ", ".join(users) + "): name the user to unlock."
        )


# --- verification ---------------------------------------------------------------------------------------------


class AssertionInvalid(HmacUnlockError):
    """The key's answer did not verify: signature, rpIdHash, UP/UV flags, or an extension output."""

    exit_code = ExitCode.VERIFY


class ClonedKey(HmacUnlockError):
    exit_code = ExitCode.VERIFY

    def __init__(self, stored: int, seen: int) -> None:
        self.stored, self.seen = stored, seen
        super().__init__(
            f"The key's signature counter {self.change(stored, seen)}: the key may have been cloned. "
            "Refusing to unlock."
        )

    @staticmethod
    def change(stored: int, seen: int) -> str:
        """What the counter did, in words: an equal count did not go backwards, it did not advance."""
        if seen == stored:
            return f"did not advance (it is {seen} again, as at the last unlock)"
        return f"went backwards (it is {seen}; the last unlock saw {stored})"


# --- the store ------------------------------------------------------------------------------------------------


class StoreError(HmacUnlockError):
    exit_code = ExitCode.STORE


class RecordUnreadable(StoreError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"The record {path} cannot be read: {reason}. It was left as it is.")


class RecordTampered(StoreError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"The record {path} failed its integrity check ({reason}). It was left as it is.")


class UnsafeLocation(StoreError):
    """A record or store directory that a non-root user could have planted or changed (CVE-2019-12209 class)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"Refusing to use {path}: {reason}.")


class StorePermission(StoreError):
    """The store or a record is there, but this user may not read or write it (the OS said EACCES/EPERM).

    Not RecordUnreadable: nothing is wrong with the record, and "remove it and enroll again" would lose the user's
    unlock key. The fix is to run the command with the right privileges."""

    def __init__(self, path: str, action: str, hint: str = "run the command as root (sudo hmacunlock ...)") -> None:
        self.path = path
        self.action = action
        super().__init__(f"Permission denied to {action} {path}: {hint}. Nothing was changed.")


class StoreWriteFailed(StoreError):
    def __init__(self, path: str, reason: str, *, replaced: bool = False) -> None:
        self.path = path
        self.replaced = replaced
        if replaced:  # the rename went through; only making it durable failed
            outcome = (
                "The new record is in place but may not survive a crash; "
                "either the old or the new record opens, nothing is lost."
            )
        else:
            outcome = "The previous record is unchanged."
        super().__init__(f"Could not write {path}: {reason}. {outcome}")


# --- recovery and targets -------------------------------------------------------------------------------------


class RecoveryFailed(HmacUnlockError):
    exit_code = ExitCode.RECOVERY


class TargetError(HmacUnlockError):
    exit_code = ExitCode.TARGET
