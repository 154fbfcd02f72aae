"""How the library talks to the person: typed events from the flows to whoever renders them (docs/internals.md).

The flows (enroll, unlock, recovery, the systemd-token flow) never read a terminal and never word a prompt for
another layer to recognise: they call an Interaction with typed events — `ask_pin(Purpose, ...)`,
`ask_secret(SecretKind)`, `touch(Purpose)`, `choose_account(names)`, `info(event)`. The CLI renders them on a
terminal (cli/terminal.py), the PAM helper as PAM conversation turns (pam_module/helper.py), tests record them
(ScriptedInteraction). Secrets come back as str and are never logged.

The default English wording of every event is here (`pin_prompt`, `touch_text`, `secret_prompt`, `Event.text`), so
a renderer that wants it does not keep a copy; no renderer decides anything by comparing text.

Standard library only, and no dataclasses (7 ms of imports): the PAM helper may use this module on its hot path.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple, Protocol


class Purpose(enum.Enum):
    """Why the key's PIN or a touch is asked for (ask_pin and touch)."""

    UNLOCK = "unlock"  # PIN + touch: unlock a user (sign-in, `unlock`, a LUKS volume or profile by unlock key)
    AUTHORISE = "authorise"  # PIN + touch: an enrolled key vouching for a change (a further key, a recovery slot)
    ENROLL_FIRST = "enroll-first"  # PIN of the key being enrolled as the user's first secret
    ENROLL_FURTHER = "enroll-further"  # PIN of a further key being enrolled (after another secret authorised it)
    MAKE_CREDENTIAL = "make-credential"  # touch: the key makes a new credential (enroll, systemd enroll)
    CHECK_CREDENTIAL = "check-credential"  # touch: enroll's second touch, the assertion that checks the credential
    SYSTEMD_ENROLL = "systemd-enroll"  # PIN of the key being enrolled in a systemd-fido2 LUKS token
    VOLUME_SECRET = "volume-secret"  # noqa: S105 - a purpose's name, not a secret. touch: systemd enroll's second touch, computing the volume's secret
    SYSTEMD_UNLOCK = "systemd-unlock"  # PIN + touch: open a volume by its systemd-fido2 token
    CHANGE_PIN = "change-pin"  # PIN: the key's current PIN, to change it
    PRESENCE_FIRST = "presence-first"  # touch: before the PIN is asked (touch_first): only someone at the key spends it
    VERIFY_PIN = "verify-pin"  # touch, then PIN: `hmacunlock key verify-pin` at the console
    MANAGE_CREDENTIALS = "manage-credentials"  # PIN: list or delete the key's credentials (`key credentials`, `remove`)
    RESET = "reset"  # touch: `hmacunlock key reset` erases the key


class SecretKind(enum.Enum):
    """A secret that is not the key's PIN (ask_secret, confirm_secret)."""

    RECOVERY = "recovery"  # a recovery key or passphrase, to unlock with it
    NEW_PASSPHRASE = "new-passphrase"  # noqa: S105 - a kind's name, not a secret. a new recovery passphrase (confirmed)
    NEW_PIN = "new-pin"  # a new PIN for the key (confirmed)
    VOLUME_PASSPHRASE = "volume-passphrase"  # noqa: S105 - a kind's name, not a secret. an existing passphrase of a LUKS volume (`subject` names it)


# --- info events: small immutable values (NamedTuple: no dataclasses import) --------------------------------


class ClonedKeyWarning(NamedTuple):
    """The signature counter went backwards and the clone policy is `warn`: the unlock goes on."""

    stored: int
    seen: int

    @property
    def text(self) -> str:
        from .errors import ClonedKey  # the error's own wording, one copy

        change = ClonedKey.change(self.stored, self.seen)
        return f"Warning: The key's signature counter {change}: the key may have been cloned."


class WrongPinRetry(NamedTuple):
    """The PIN was wrong and it is asked again (the PAM helper's retries)."""

    attempts_left: int | None

    @property
    def text(self) -> str:
        from .errors import WrongPin  # the error's own wording, one copy

        return WrongPin(self.attempts_left).message


class SystemdTokenWithoutPin(NamedTuple):
    """A systemd-fido2 token says the PIN is required, yet its keyslot opens only with the key's no-PIN secret:
    systemd-cryptenroll 252-255 enrolled it on a makeCredUvNotRqd key without asking the PIN (systemd #31443)."""

    volume: str
    token_id: int | None

    @property
    def text(self) -> str:
        return (
            f"{self.volume}: systemd-fido2 token {self.token_id} says it needs the PIN, but systemd-cryptenroll "
            "enrolled it without asking for it (systemd issue #31443): the keyslot opens with the key's no-PIN "
            "secret. Opening it that way; touch the key again. Re-enrolling the token with a fixed "
            "systemd-cryptenroll (or 'hmacunlock luks enroll --systemd') binds it to the PIN."
        )


Event = ClonedKeyWarning | WrongPinRetry | SystemdTokenWithoutPin
EVENTS = (ClonedKeyWarning, WrongPinRetry, SystemdTokenWithoutPin)


class Interaction(Protocol):
    def ask_pin(self, purpose: Purpose, key_label: str | None = None, attempts_left: int | None = None) -> str:
        """Ask for the key's PIN, without echo. `key_label` names the key when known, `attempts_left` when known.
        Raises errors.Cancelled on end of input."""

    def ask_secret(self, kind: SecretKind, subject: str | None = None) -> str:
        """Ask for a recovery key, passphrase or new PIN, without echo. Raises errors.Cancelled on end of input."""

    def confirm_secret(self, kind: SecretKind, subject: str | None = None) -> str | None:
        """Ask for a new secret a second time; None where confirmations are skipped (not a terminal)."""

    def touch(self, purpose: Purpose) -> None:
        """The key is about to wait for a touch (right before the CTAP request that needs it)."""

    def choose_account(self, names: Sequence[str]) -> str | None:
        """Let the person pick one of the key's accounts; None when nobody can be asked."""

    def info(self, event: Event) -> None:
        """Something the person should know (a warning, a retry); never a secret."""


# --- the default wording ----------------------------------------------------------------------------------------

_PIN_SUBJECTS = {  # whose PIN: "PIN of <subject>", or with the key's label "PIN of <subject> 'LABEL'"
    Purpose.ENROLL_FURTHER: "the new security key",
}
_TOUCH_TEXTS = {
    Purpose.MAKE_CREDENTIAL: "Touch your security key to create the credential",
    Purpose.CHECK_CREDENTIAL: "Touch your security key again",
    Purpose.VOLUME_SECRET: "Touch your security key again to compute the volume's secret",
    Purpose.PRESENCE_FIRST: (
        "Touch your security key to start (a touch before the PIN: this sign-in costs one more touch)"
    ),
    Purpose.VERIFY_PIN: "Touch your security key (to show you are at it; no PIN attempt is used yet)",
    Purpose.RESET: "Touch your security key to erase it",
}
_SECRET_PROMPTS = {
    SecretKind.RECOVERY: "Recovery key or passphrase: ",
    SecretKind.NEW_PASSPHRASE: "New recovery passphrase: ",
    SecretKind.NEW_PIN: "New PIN: ",
    SecretKind.VOLUME_PASSPHRASE: "Existing passphrase of {subject}: ",
}
_CONFIRM_PROMPTS = {
    SecretKind.NEW_PASSPHRASE: "Repeat the recovery passphrase: ",
    SecretKind.NEW_PIN: "Repeat the new PIN: ",
}


def pin_prompt(purpose: Purpose, key_label: str | None = None, attempts_left: int | None = None) -> str:
    """ "PIN of the security key: ", with the key's label "PIN of 'backup-nano': ", then the attempts left in
    brackets; the new key being enrolled is "PIN of the new security key 'backup-nano': "."""
    if purpose is Purpose.CHANGE_PIN:
        text = "Current PIN"
    elif purpose in _PIN_SUBJECTS:
        text = f"PIN of {_PIN_SUBJECTS[purpose]}" + (f" '{key_label}'" if key_label else "")
    else:
        text = f"PIN of '{key_label}'" if key_label else "PIN of the security key"
    attempts = _attempts(attempts_left)
    return text + (f" ({attempts}): " if attempts else ": ")


def _attempts(left: int | None) -> str:
    return "" if left is None else f"{left} attempt{'s' if left != 1 else ''} left"


def touch_text(purpose: Purpose) -> str:
    return _TOUCH_TEXTS.get(purpose, "Touch your security key")


def secret_prompt(kind: SecretKind, subject: str | None = None) -> str:
    return _SECRET_PROMPTS[kind].format(subject=subject or "the volume")


def confirm_prompt(kind: SecretKind, subject: str | None = None) -> str:
    return _CONFIRM_PROMPTS.get(kind, "Repeat: ").format(subject=subject or "the volume")


MAX_CHOICE_ANSWERS = 5  # "Which account?": then give up as if nobody could be asked (AmbiguousUser), never loop
CHOICE_PROMPT = "Which account? "


def account_list(names: Sequence[str]) -> str:
    """The numbered list shown before "Which account?" (one line per name)."""
    return "\n".join(f"  {i}) {name}" for i, name in enumerate(names, 1))


def account_choice(answer: str, names: Sequence[str]) -> str | None:
    """The name an answer to "Which account?" picks (a number from 1 or one of the names), None for neither."""
    answer = answer.strip()
    if answer.isdigit() and 1 <= int(answer) <= len(names):
        return names[int(answer) - 1]
    return answer if answer in names else None


def choice_retry_text(names: Sequence[str]) -> str:
    return f"  Answer a number from 1 to {len(names)}, or one of the names."


def ask_new_secret(interaction: Interaction, kind: SecretKind, mismatch_error: Exception) -> str:
    """Ask for a new secret, then again to confirm it; raise `mismatch_error` when the two differ.

    Off a terminal confirm_secret gives None and there is nothing to compare: the one answer is taken.
    """
    secret = interaction.ask_secret(kind)
    again = interaction.confirm_secret(kind)
    if again is not None and again != secret:
        raise mismatch_error
    return secret


class ScriptedInteraction:
    """Answers prompts from a list, in order: the non-terminal contract, and what tests use.

    It records what it was asked: `asked` (the Purpose of each PIN, the SecretKind of each other secret, in order),
    `touched` (the Purpose of each touch), `informed` (each info event), `choices` (each list of names offered).
    """

    def __init__(self, secrets: Sequence[str] = (), choice: str | None = None) -> None:
        self._secrets = list(secrets)
        self.choice = choice
        self.asked: list[Purpose | SecretKind] = []
        self.touched: list[Purpose] = []
        self.informed: list[Event] = []
        self.choices: list[list[str]] = []

    def _next(self, asked: Purpose | SecretKind, prompt: str) -> str:
        from .errors import Cancelled

        self.asked.append(asked)
        if not self._secrets:
            raise Cancelled(f"No input for prompt: {prompt.strip()}")
        return self._secrets.pop(0)

    def ask_pin(self, purpose: Purpose, key_label: str | None = None, attempts_left: int | None = None) -> str:
        return self._next(purpose, pin_prompt(purpose, key_label, attempts_left))

    def ask_secret(self, kind: SecretKind, subject: str | None = None) -> str:
        return self._next(kind, secret_prompt(kind, subject))

    def confirm_secret(self, kind: SecretKind, subject: str | None = None) -> str | None:
        return None

    def touch(self, purpose: Purpose) -> None:
        self.touched.append(purpose)

    def choose_account(self, names: Sequence[str]) -> str | None:
        self.choices.append(list(names))
        return self.choice if self.choice in names else None

    def info(self, event: Event) -> None:
        self.informed.append(event)
