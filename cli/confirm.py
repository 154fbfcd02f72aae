"""Confirming a destructive step: one question, worded with what goes and what becomes unopenable.

The input contract (docs/cli.md): at a terminal the person is asked and must type the answer (`yes`); with stdin not
a terminal nobody can be asked, so the command needs `--yes` and otherwise refuses (ConfirmationRequired) before any
PIN, touch or change. `--yes` skips the question everywhere; it never reads a line of stdin, so the lines a script
gives for the prompts that follow (PINs, passphrases) stay in order.
"""

from __future__ import annotations

import argparse

from libhmacunlock.errors import ConfirmationRequired, NotConfirmed

from .terminal import TerminalInteraction

ANSWER = "yes"


def add_yes_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do it without asking (needed when stdin is not a terminal: a script must say it means it)",
    )


def confirm_destructive(
    interaction: TerminalInteraction,
    action: str,
    unopenable: str | None,
    *,
    yes: bool,
    command: str,
    answer: str = ANSWER,
) -> None:
    """Return only when the step may go ahead: `yes` given, or the person at the terminal typed `answer`.

    `action` says what is about to happen ("This removes alice's record: 2 security keys, 1 recovery slot."),
    `unopenable` what can no longer be opened afterwards (None: nothing), each a whole sentence. `command` is the
    command line as the person would type it again, for the refusal's message. Raises ConfirmationRequired when
    stdin is not a terminal and `yes` is not given, NotConfirmed on any other answer or the end of input. Call it
    before any PIN, touch or write: a refusal changes nothing and costs nothing.
    """
    if yes:
        return
    text = action if unopenable is None else f"{action} {unopenable}"
    if not interaction.interactive:
        raise ConfirmationRequired(command, text)
    interaction.say(text)
    if not interaction.confirm(f"Type '{answer}' to go on: ", answer):
        raise NotConfirmed()
