"""The client's side of the software key's UDP transport (device spec `udp:HOST:PORT`).

`UdpCtapHidConnection` carries CTAPHID reports, one 64-byte report per datagram, so that python-fido2's own
`CtapHidDevice` does the framing, channel and keepalive work: our code never speaks CTAPHID itself, and a bug in
the key's CTAPHID cannot hide behind a matching bug here. Nothing from `libhmacunlock.softkey` is imported.
"""

from __future__ import annotations

import socket
import struct

from fido2.ctap import CtapError
from fido2.hid import ConnectionFailure, CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

from .errors import DeviceSpecInvalid, KeyRemoved, NoKeyFound

REPORT_SIZE = 64
DEFAULT_TIMEOUT = 5.0  # seconds of silence before the key counts as gone; a waiting key sends keepalives every 100 ms


def parse_udp_spec(spec: str) -> tuple[str, int]:
    """`udp:HOST:PORT` (HOST may be `[v6 address]`) -> (host, port). Raises DeviceSpecInvalid on anything else."""
    rest = spec[4:] if spec.startswith("udp:") else None
    host, sep, port = (rest or "").rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not rest or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeviceSpecInvalid(f"Not a UDP device spec: {spec!r} (expected udp:HOST:PORT, e.g. udp:127.0.0.1:8111).")
    return host, int(port)


def format_udp_spec(host: str, port: int) -> str:
    """The spec `parse_udp_spec` reads back: an IPv6 host in brackets (`udp:[::1]:4242`, never `udp:::1:4242`)."""
    return f"udp:[{host}]:{port}" if ":" in host else f"udp:{host}:{port}"


class UdpCtapHidConnection(CtapHidConnection):
    """A connected UDP socket carrying HID reports to and from the software key."""

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.spec = format_udp_spec(host, port)
        self.timeout = timeout
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self._sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise NoKeyFound(f"Cannot reach the security key at {self.spec}: {exc.strerror or exc}.") from None
        try:
            # connected: the kernel drops datagrams from anyone but the key, and reports a dead port
            self._sock.connect(address)
        except OSError as exc:
            self._sock.close()
            raise NoKeyFound(f"Cannot reach the security key at {self.spec}: {exc.strerror or exc}.") from None
        self._sock.settimeout(timeout)

    def write_packet(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError as exc:
            raise KeyRemoved(f"The security key at {self.spec} went away ({exc.strerror or exc}).") from None

    def read_packet(self) -> bytes:
        while True:
            try:
                report = self._sock.recv(REPORT_SIZE + 1)
            except TimeoutError:
                raise KeyRemoved(
                    f"The security key at {self.spec} stopped answering (nothing for {self.timeout:g} s)."
                ) from None
            except OSError as exc:  # ECONNREFUSED: nothing listens on that port any more
                raise KeyRemoved(f"The security key at {self.spec} went away ({exc.strerror or exc}).") from None
            if len(report) == REPORT_SIZE:
                return report
            # not a HID report of this device: ignore it rather than mis-parse it

    def close(self) -> None:
        self._sock.close()


def open_udp_device(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> CtapHidDevice:
    """Open the software key at HOST:PORT as a python-fido2 `CtapHidDevice` (runs CTAPHID INIT)."""
    connection = UdpCtapHidConnection(host, port, timeout)
    descriptor = HidDescriptor(
        path=connection.spec,
        vid=0,
        pid=0,
        report_size_in=REPORT_SIZE,
        report_size_out=REPORT_SIZE,
        product_name="hmacunlock software key (UDP)",
        serial_number=None,
    )
    try:
        return CtapHidDevice(descriptor, connection)
    except KeyRemoved:
        connection.close()
        raise NoKeyFound(
            f"No security key answers at {connection.spec}: is 'hmacunlock softkey serve' running there?"
        ) from None
    except (ConnectionFailure, CtapError, struct.error):  # something answers, but not CTAPHID INIT
        connection.close()
        raise NoKeyFound(f"What answers at {connection.spec} is not a FIDO security key.") from None
    except BaseException:
        connection.close()
        raise
