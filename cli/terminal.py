"""The terminal renderer of the library's Interaction events, and the input contract (docs/internals.md, Input).

On a terminal: secrets are read without echo and confirmations are asked. Otherwise: each prompt reads one line
from stdin, in prompt order, and confirmations are skipped: nobody is asked, and a destructive command needs --yes
instead (cli/confirm.py), or refuses. Prompts and messages go to stderr, so stdout stays
clean for what a command prints on purpose (a recovery key, `--key-file -`). Events are worded with the library's
default texts (libhmacunlock.interaction); `say` is the CLI's own status line, not a library event.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from typing import TextIO

from libhmacunlock.errors import Cancelled
from libhmacunlock.interaction import (
    Event,
    Purpose,
    SecretKind,
    confirm_prompt,
    pin_prompt,
    secret_prompt,
    touch_text,
)

MAX_CHOICE_ANSWERS = 5  # then give up as if nobody could be asked (AmbiguousUser), rather than loop forever


class TerminalInteraction:
    def __init__(self, stdin: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self._stdin = stdin or sys.stdin
        self._stderr = stderr or sys.stderr

    @property
    def interactive(self) -> bool:
        try:
            return self._stdin.isatty()
        except (AttributeError, ValueError):
            return False

    def _read_secret(self, prompt: str) -> str:
        if self.interactive:
            try:
                return getpass.getpass(prompt, stream=self._stderr)
            except EOFError:
                raise Cancelled("No input given.") from None
        line = self._stdin.readline()
        if not line:
            raise Cancelled(f"Standard input ended before the prompt: {prompt.strip()}")
        return line.rstrip("\r\n")

    def ask_pin(self, purpose: Purpose, key_label: str | None = None, attempts_left: int | None = None) -> str:
        return self._read_secret(pin_prompt(purpose, key_label, attempts_left))

    def ask_secret(self, kind: SecretKind, subject: str | None = None) -> str:
        return self._read_secret(secret_prompt(kind, subject))

    def confirm_secret(self, kind: SecretKind, subject: str | None = None) -> str | None:
        return self._read_secret(confirm_prompt(kind, subject)) if self.interactive else None

    def touch(self, purpose: Purpose) -> None:
        self.say(touch_text(purpose))

    def info(self, event: Event) -> None:
        self.say(event.text)

    def say(self, message: str) -> None:
        """A line for the person on stderr (the CLI's own status messages)."""
        print(message, file=self._stderr, flush=True)

    def confirm(self, question: str, answer: str) -> bool:
        """True only when a person at a terminal types `answer` (the CLI's own confirmations); off a terminal
        nobody is asked, and the answer is no."""
        if not self.interactive:
            return False
        self._stderr.write(question)
        self._stderr.flush()
        return self._stdin.readline().strip() == answer

    def choose_account(self, names: Sequence[str]) -> str | None:
        """A number or a name from `names`; an answer that is neither is asked again (end of input: None)."""
        if not self.interactive:
            return None
        for i, option in enumerate(names, 1):
            print(f"  {i}) {option}", file=self._stderr)
        for _ in range(MAX_CHOICE_ANSWERS):
            self._stderr.write("Which account? ")
            self._stderr.flush()
            line = self._stdin.readline()
            if not line:
                return None
            answer = line.strip()
            if answer.isdigit() and 1 <= int(answer) <= len(names):
                return names[int(answer) - 1]
            if answer in names:
                return answer
            print(f"  Answer a number from 1 to {len(names)}, or one of the names.", file=self._stderr)
        return None
