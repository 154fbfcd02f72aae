"""The software key, run inside the benchmark process so that its messages can be counted and timed at the key.

Both PAM stacks talk to the same key over CTAPHID/UDP. A Monitor wraps the key's Authenticator.process (on the
instance: the softkey code is unchanged) and records each CTAP2 command with when it arrived and how long the key
took; `Authenticator.message_counts` is the key's own count, read to cross-check. A clientPIN message is named by
its subcommand (getKeyAgreement, getPinRetries, the token), decoded from the request after the run, not while the
client waits.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libhmacunlock.softkey.authenticator import COMMAND_NAMES
from libhmacunlock.softkey.pin import SUBCOMMAND_NAMES

_now = functools.partial(time.clock_gettime, time.CLOCK_MONOTONIC)


@dataclass(frozen=True)
class Message:
    command: int
    start: float  # CLOCK_MONOTONIC, comparable with the helper probe's marks
    seconds: float  # time inside the key
    sub: int | None = None  # a clientPIN's subcommand

    @property
    def name(self) -> str:
        if self.command == 0x06:
            return SUBCOMMAND_NAMES.get(self.sub if self.sub is not None else -1, "clientPIN")
        return COMMAND_NAMES.get(self.command, f"0x{self.command:02x}")


def _subcommand(request: bytes) -> int | None:
    from fido2 import cbor

    if not request or request[0] != 0x06:
        return None
    try:
        params = cbor.decode(request[1:])
    except Exception:  # noqa: BLE001 - a malformed request has no subcommand
        return None
    sub = params.get(0x02) if isinstance(params, dict) else None
    return sub if isinstance(sub, int) else None


@dataclass
class Monitor:
    # (command, start, seconds, request): named (the clientPIN subcommand decoded) by take(), off the timed path
    messages: list[tuple[int, float, float, bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, authenticator: Any) -> None:
        process = authenticator.process

        @functools.wraps(process)
        def timed(request: bytes, *args: Any, **kwargs: Any) -> Any:
            start = _now()
            try:
                return process(request, *args, **kwargs)
            finally:
                with self._lock:
                    self.messages.append((request[0] if request else -1, start, _now() - start, bytes(request)))

        authenticator.process = timed

    def take(self) -> list[Message]:
        """The messages since the last take()."""
        with self._lock:
            taken, self.messages = self.messages, []
        return [Message(command, start, seconds, _subcommand(request)) for command, start, seconds, request in taken]


def names(messages: list[Message]) -> str:
    """'getInfo, clientPIN×2, getAssertion' in order of first appearance."""
    counts = Counter(m.name for m in messages)
    return ", ".join(f"{n}×{c}" if c > 1 else n for n, c in counts.items())


@dataclass
class RunningKey:
    spec: str  # "udp:127.0.0.1:PORT"
    authenticator: Any
    monitor: Monitor

    @property
    def address(self) -> str:
        return self.spec.removeprefix("udp:")

    def counted(self) -> int:
        """The key's own count of CTAP2 commands processed so far (Authenticator.message_counts)."""
        return sum(self.authenticator.message_counts.values())

    def set_pin(self, pin: str) -> None:
        """Give the fresh key its PIN, in-process through python-fido2's ClientPin."""
        from fido2.ctap2 import Ctap2
        from fido2.ctap2.pin import ClientPin

        from libhmacunlock.softkey.device import SoftKeyDevice

        ClientPin(Ctap2(SoftKeyDevice(self.authenticator))).set_pin(pin)
        self.monitor.take()


@contextmanager
def running_key(state_path: Path, profile: Any = None) -> Iterator[RunningKey]:
    """The software key served over UDP from a thread of this process, presence approved automatically; `profile`
    a softkey profile (libhmacunlock.softkey.profiles), default ctap21."""
    from libhmacunlock.softkey.udp import running_udp_softkey

    with running_udp_softkey(state_path, profile=profile) as server:
        monitor = Monitor()
        authenticator = server.authenticator
        monitor.wrap(authenticator)
        yield RunningKey(server.spec, authenticator, monitor)
