"""The terminal side of the input contract (design.md, Input).

On a terminal: secrets are read without echo and confirmations are asked. Otherwise: each prompt reads one line
from stdin, in prompt order, and confirmations are skipped. Prompts and messages go to stderr, so stdout stays
clean for what a command prints on purpose (a recovery key, `--key-file -`).
"""

from __future__ import annotations

import getpass
import sys
from typing import Sequence

from libhmacunlock.errors import Cancelled


MAX_CHOICE_ANSWERS = 5  # then give up as if nobody could be asked (AmbiguousUser), rather than loop forever


class TerminalInteraction:
    def __init__(self, stdin=None, stderr=None) -> None:
        self._stdin = stdin or sys.stdin
        self._stderr = stderr or sys.stderr

    @property
    def interactive(self) -> bool:
        try:
            return self._stdin.isatty()
        except (AttributeError, ValueError):
            return False

    def ask_secret(self, prompt: str) -> str:
        if self.interactive:
            try:
                return getpass.getpass(prompt, stream=self._stderr)
            except EOFError:
                raise Cancelled("No input given.") from None
        line = self._stdin.readline()
        if not line:
            raise Cancelled(f"Standard input ended before the prompt: {prompt.strip()}")
        return line.rstrip("\r\n")

    def confirm_secret(self, prompt: str) -> str | None:
        return self.ask_secret(prompt) if self.interactive else None

    def tell(self, message: str) -> None:
        print(message, file=self._stderr, flush=True)

    def choose(self, prompt: str, options: Sequence[str]) -> str | None:
        """A number or a name from `options`; an answer that is neither is asked again (end of input: None)."""
        if not self.interactive:
            return None
        for i, option in enumerate(options, 1):
            print(f"  {i}) {option}", file=self._stderr)
        for _ in range(MAX_CHOICE_ANSWERS):
            self._stderr.write(prompt)
            self._stderr.flush()
            line = self._stdin.readline()
            if not line:
                return None
            answer = line.strip()
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                return options[int(answer) - 1]
            if answer in options:
                return answer
            print(f"  Answer a number from 1 to {len(options)}, or one of the names.", file=self._stderr)
        return None
