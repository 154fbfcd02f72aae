"""CTAPHID over UDP: one 64-byte report per datagram, no report-id byte, replies to the sender's address.

`serve()` runs in the foreground (the `hmacunlock softkey serve` command); `running_udp_softkey()` runs a key in a
background thread for tests and the demo.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .ctaphid import REPORT_SIZE, CtapHidKey, Processor

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.03  # how often the loop wakes without traffic: keepalives are due every 100 ms


class UdpSoftKeyServer:
    """A bound UDP socket feeding one `CtapHidKey`. Thread-safe `shutdown()` and `power_cycle()`."""

    def __init__(self, authenticator: Processor, host: str = "127.0.0.1", port: int = 0) -> None:
        self.authenticator = authenticator
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.settimeout(POLL_INTERVAL)
        self._stop = threading.Event()
        self.key = CtapHidKey(authenticator, self._send)
        self.host = host
        self.port: int = self._sock.getsockname()[1]

    @property
    def spec(self) -> str:
        """The device spec the rest of the project opens this key with."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp:{host}:{self.port}"

    def serve_forever(self) -> None:
        """Answer datagrams until `shutdown()`."""
        try:
            while not self._stop.is_set():
                try:
                    report, peer = self._sock.recvfrom(REPORT_SIZE + 1)
                except TimeoutError:
                    report = None
                except OSError:
                    if self._stop.is_set():
                        break
                    continue  # e.g. ICMP port unreachable from a client that left: not our problem
                try:
                    if report is not None:
                        self.key.receive(report, peer)
                    self.key.tick()
                except Exception:  # a bug in one packet's handling must not unplug the key for everyone
                    logger.exception("CTAPHID packet handling failed")
        finally:
            self.key.close()
            self._sock.close()

    def shutdown(self) -> None:
        self._stop.set()

    def power_cycle(self) -> None:
        """Unplug and plug back in (what SIGHUP does to `hmacunlock softkey serve`)."""
        self.key.power_cycle()

    def _send(self, report: bytes, peer: Any) -> None:
        self._sock.sendto(report, peer)


def serve(
    authenticator: Processor,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[UdpSoftKeyServer], None] | None = None,
) -> None:
    """Serve `authenticator` on HOST:PORT in this thread; `ready(server)` is called once the socket is bound."""
    server = UdpSoftKeyServer(authenticator, host, port)
    if ready:
        ready(server)
    server.serve_forever()


class RunningUdpSoftKey:
    """A `UdpSoftKeyServer` on a background thread (what `running_udp_softkey` yields)."""

    def __init__(self, server: UdpSoftKeyServer) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name="udp-softkey", daemon=True)

    @property
    def spec(self) -> str:
        return self.server.spec

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def authenticator(self) -> Processor:
        return self.server.authenticator

    def power_cycle(self) -> None:
        self.server.power_cycle()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(timeout=10.0)


@contextlib.contextmanager
def running_udp_softkey(
    state_path: str | Path,
    presence: Any = None,
    host: str = "127.0.0.1",
    port: int = 0,
    profile: Any = None,
) -> Iterator[RunningUdpSoftKey]:
    """Run the software key whose state is at `state_path` over UDP until the block ends.

    `presence` is a `PresencePolicy` (default: approve every touch); `profile` a profile name or
    `softkey.profiles.Profile` (default ctap21).
    """
    from .authenticator import Authenticator  # imported here so the transport loads without the core
    from .presence import PresencePolicy
    from .state import KeyState

    state = KeyState.open(state_path)
    authenticator = Authenticator(state, presence if presence is not None else PresencePolicy.approve(), profile)
    running = RunningUdpSoftKey(UdpSoftKeyServer(authenticator, host, port))
    running.start()
    try:
        yield running
    finally:
        running.stop()
