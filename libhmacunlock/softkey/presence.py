"""`PresencePolicy`: how the software key obtains a "touch" (user presence).

approve() answers at once (tests, demo); deny() refuses; prompt(timeout) asks on the controlling terminal. While
waiting the authenticator's keepalive callback is called with STATUS.UPNEEDED (CTAPHID sends KEEPALIVE), and a
cancel event ends the wait with CTAP2_ERR_KEEPALIVE_CANCEL.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from fido2.ctap import STATUS

from .errors import ERR, CtapFailure

KEEPALIVE_INTERVAL = 0.1  # seconds; CTAPHID asks for a keepalive at least every 100 ms

Keepalive = Callable[[STATUS], None]


class Cancel(Protocol):
    """What a wait can be cancelled by: a threading.Event, or anything that answers like one."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...


class PresenceMode(Enum):
    APPROVE = "approve"
    DENY = "deny"
    PROMPT = "prompt"


@dataclass(frozen=True)
class PresencePolicy:
    mode: PresenceMode = PresenceMode.APPROVE
    timeout: float = 30.0
    tty: str = "/dev/tty"
    delay: float = 0.0  # approve only: the touch comes after this many seconds (keepalive / cancel tests)

    @classmethod
    def approve(cls, delay: float = 0.0) -> PresencePolicy:
        return cls(PresenceMode.APPROVE, delay=delay)

    @classmethod
    def deny(cls) -> PresencePolicy:
        return cls(PresenceMode.DENY)

    @classmethod
    def prompt(cls, timeout: float = 30.0, tty: str = "/dev/tty") -> PresencePolicy:
        return cls(PresenceMode.PROMPT, timeout, tty)

    def wait(
        self,
        purpose: str,
        keepalive: Keepalive | None = None,
        cancel: Cancel | None = None,
    ) -> None:
        """Return when the user is present; raise CtapFailure(OPERATION_DENIED / USER_ACTION_TIMEOUT /
        KEEPALIVE_CANCEL) otherwise."""
        if cancel is not None and cancel.is_set():
            raise CtapFailure(ERR.KEEPALIVE_CANCEL)
        if self.mode is PresenceMode.APPROVE:
            if self.delay > 0:
                self._sleep(self.delay, keepalive, cancel)
            return
        if self.mode is PresenceMode.DENY:
            raise CtapFailure(ERR.OPERATION_DENIED)
        self._ask(purpose, keepalive, cancel)

    def _ask(self, purpose: str, keepalive: Keepalive | None, cancel: Cancel | None) -> None:
        try:
            fd = os.open(self.tty, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            # nobody can touch a key that has no terminal to ask on: fail closed
            raise CtapFailure(ERR.OPERATION_DENIED) from None
        try:
            os.write(fd, f"software key: touch requested ({purpose}). Press Enter to approve, n to deny: ".encode())
            answer = self._read_line(fd, keepalive, cancel)
        finally:
            os.close(fd)
        if answer.strip().lower() not in ("", "y", "yes"):
            raise CtapFailure(ERR.OPERATION_DENIED)

    @staticmethod
    def _sleep(seconds: float, keepalive: Keepalive | None, cancel: Cancel | None) -> None:
        wait_with_keepalives(seconds, keepalive, cancel)

    def _read_line(self, fd: int, keepalive: Keepalive | None, cancel: Cancel | None) -> str:
        deadline = time.monotonic() + self.timeout
        buf = b""
        while True:
            if keepalive is not None:
                keepalive(STATUS.UPNEEDED)
            if cancel is not None and cancel.is_set():
                raise CtapFailure(ERR.KEEPALIVE_CANCEL)
            left = deadline - time.monotonic()
            if left <= 0:
                raise CtapFailure(ERR.USER_ACTION_TIMEOUT)
            ready, _, _ = select.select([fd], [], [], min(KEEPALIVE_INTERVAL, left))
            if ready:
                chunk = os.read(fd, 256)
                if not chunk:
                    raise CtapFailure(ERR.OPERATION_DENIED)
                buf += chunk
                if b"\n" in buf or b"\r" in buf:
                    return buf.decode(errors="replace")


def wait_with_keepalives(
    seconds: float,
    keepalive: Keepalive | None,
    cancel: Cancel | None,
    status: STATUS = STATUS.UPNEEDED,
) -> None:
    """Let `seconds` pass, reporting `status` every keepalive interval; KEEPALIVE_CANCEL if `cancel` is set."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if keepalive is not None:
            keepalive(status)
        if cancel is not None and cancel.wait(min(KEEPALIVE_INTERVAL, left)):
            raise CtapFailure(ERR.KEEPALIVE_CANCEL)
        if cancel is None:
            time.sleep(min(KEEPALIVE_INTERVAL, left))
