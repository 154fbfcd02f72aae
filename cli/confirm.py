"""Confirmations of destructive commands (issue 16), one way for every command: `--yes`, or a person at a terminal.

Per the input contract (docs/internals.md), confirmations are not asked when stdin is not a terminal; a destructive
command there does not go ahead unasked: it needs --yes, and without it is refused (ConfirmationRequired) before
anything is asked of the key or written. Called before any PIN, touch or write.
"""

from __future__ import annotations

import argparse

from libhmacunlock.errors import ConfirmationRequired, NotConfirmed

from .terminal import TerminalInteraction


def add_yes_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-y", "--yes", action="store_true", help="do it without asking (for scripts; stdin not a terminal)")


def confirm_destructive(
    interaction: TerminalInteraction,
    action: str,
    unopenable: str | None,
    *,
    yes: bool,
    command: str,
    answer: str = "yes",
) -> None:
    """Return when the step may go ahead: `yes` given, or the person at the terminal typed `answer`.

    `action`: what is about to happen; `unopenable`: what can no longer be opened afterwards (None: nothing).
    Not a terminal and no `yes`: ConfirmationRequired. Any other answer (or end of input): NotConfirmed."""
    if yes:
        return
    if not interaction.interactive:
        raise ConfirmationRequired(command)
    interaction.say(action)
    if unopenable:
        interaction.say(unopenable)
    if not interaction.confirm(f"Type '{answer}' to go on: ", answer):
        raise NotConfirmed()
