"""Run a program on a pseudo-terminal, answer its secret prompts, and timestamp what it shows.

Both PAM stacks prompt through pamtester's conversation (libpam_misc's misc_conv) and pamu2fcfg reads its PIN from
/dev/tty, so a terminal is what they really see. A prompt is answered only once the terminal's echo is off: misc_conv
and readpassphrase switch echo off with TCSAFLUSH, which throws away anything typed before that moment, so typing
ahead would lose the PIN (a person cannot type ahead of the prompt either).
"""

from __future__ import annotations

import errno
import os
import pty
import re
import select
import signal
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class PtyRun:
    """What one run showed, times in seconds from just before fork."""

    returncode: int
    output: bytes
    first_output: float | None  # first byte on the terminal: the first prompt a person sees
    answered: list[float] = field(default_factory=list)  # when each secret was written
    total: float = 0.0  # until the program exited
    started: float = 0.0  # CLOCK_MONOTONIC (perf_counter on Linux) just before fork: the key's Message.start base

    @property
    def after_last_answer(self) -> float | None:
        """Latency a person feels once they press Enter on the last secret."""
        return self.total - self.answered[-1] if self.answered else None

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


class PtyRunError(Exception):
    pass


def _echo_off(fd: int) -> bool:
    # On Linux a TCGETS on the master reports the slave's termios: echo off means the reader flushed and waits.
    try:
        return not termios.tcgetattr(fd)[3] & termios.ECHO
    except termios.error:
        return False


def run_on_pty(
    argv: Sequence[str],
    secrets: Sequence[str] = (),
    *,
    prompt: bytes = rb"(?i)pin[^\n]*:\s*$",
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    typing_delay: float = 0.0,
) -> PtyRun:
    """Run argv on a new pty (its controlling terminal), answering each prompt that matches with the next secret."""
    pending = list(secrets)
    pattern = re.compile(prompt)
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # child: exec or die without running the parent's cleanup
        try:
            os.execvpe(argv[0], list(argv), dict(env if env is not None else os.environ))
        finally:
            os._exit(127)
    out = bytearray()
    run = PtyRun(returncode=-1, output=b"", first_output=None, started=start)
    scan_from = 0
    deadline = start + timeout
    try:
        while True:
            wait = deadline - time.perf_counter()
            if wait <= 0:
                raise PtyRunError(f"{argv[0]} did not finish in {timeout:.0f} s; it showed: {bytes(out)[-300:]!r}")
            ready, _, _ = select.select([fd], [], [], min(wait, 0.5))
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError as exc:  # EIO: the slave side closed, the program is done
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                break
            if run.first_output is None:
                run.first_output = time.perf_counter() - start
            out += chunk
            if pending and pattern.search(bytes(out[scan_from:])):
                scan_from = len(out)
                _answer(fd, pending.pop(0), typing_delay, deadline)
                run.answered.append(time.perf_counter() - start)
        _, status = os.waitpid(pid, 0)
        run.total = time.perf_counter() - start
        pid = 0
        run.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    run.output = bytes(out)
    return run


def _answer(fd: int, secret: str, typing_delay: float, deadline: float) -> None:
    while not _echo_off(fd):
        if time.perf_counter() > deadline:
            raise PtyRunError("the program prompted but never switched echo off")
        time.sleep(0.0002)
    if typing_delay:
        time.sleep(typing_delay)  # a person typing: work the program does meanwhile is hidden from them
    os.write(fd, secret.encode() + b"\n")
