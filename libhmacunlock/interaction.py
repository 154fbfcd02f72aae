"""How the library talks to the person: the one seam between the flows and a terminal, a PAM conversation or a test.

The flows (enroll, unlock, recovery) never read a terminal themselves: they ask an Interaction. The CLI gives
them a terminal one (cli/terminal.py), the PAM helper one that speaks the PAM conversation over its pipe, tests a
scripted one. Secrets come back as str and are never logged.
"""

from __future__ import annotations

from typing import Protocol, Sequence


class Interaction(Protocol):
    def ask_secret(self, prompt: str) -> str:
        """Ask for a PIN, passphrase or recovery key, without echo. Raises errors.Cancelled on end of input."""

    def confirm_secret(self, prompt: str) -> str | None:
        """Ask for a secret a second time to confirm it; None where confirmations are skipped (not a terminal)."""

    def tell(self, message: str) -> None:
        """Show a short message (e.g. 'Touch your security key'); never a secret."""

    def choose(self, prompt: str, options: Sequence[str]) -> str | None:
        """Let the person pick one option; None when nobody can be asked (no terminal)."""


def ask_new_secret(interaction: Interaction, prompt: str, confirm_prompt: str, mismatch_error: Exception) -> str:
    """Ask for a new secret, then again to confirm it; raise `mismatch_error` when the two differ.

    Off a terminal confirm_secret gives None and there is nothing to compare: the one answer is taken.
    """
    secret = interaction.ask_secret(prompt)
    again = interaction.confirm_secret(confirm_prompt)
    if again is not None and again != secret:
        raise mismatch_error
    return secret


class ScriptedInteraction:
    """Answers prompts from a list, in order: the non-terminal contract, and what tests use."""

    def __init__(self, secrets: Sequence[str] = (), choice: str | None = None) -> None:
        self._secrets = list(secrets)
        self.choice = choice
        self.told: list[str] = []
        self.asked: list[str] = []

    def ask_secret(self, prompt: str) -> str:
        from .errors import Cancelled

        self.asked.append(prompt)
        if not self._secrets:
            raise Cancelled(f"No input for prompt: {prompt.strip()}")
        return self._secrets.pop(0)

    def confirm_secret(self, prompt: str) -> str | None:
        return None

    def tell(self, message: str) -> None:
        self.told.append(message)

    def choose(self, prompt: str, options: Sequence[str]) -> str | None:
        return self.choice if self.choice in options else None
