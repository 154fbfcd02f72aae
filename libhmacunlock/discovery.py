"""Finding the security key a device spec names: `auto`, `hid:/dev/hidrawN`, `udp:HOST:PORT`, or one already open.

device.py is the key once it is open (the only CTAP caller); this module only finds and opens it. `auto` with
several USB keys probes each with an up=false getAssertion for the user's credentials (no PIN, no touch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from fido2.ctap import CtapDevice

from .device import Key
from .errors import CredentialNotOnKey, DeviceSpecInvalid, NoKeyFound

DEFAULT_TIMEOUT = 5.0


def open_key(
    spec: str | CtapDevice | Key, *, timeout: float = DEFAULT_TIMEOUT, credentials: Sequence[tuple[str, bytes]] = ()
) -> Key:
    """Open `auto`, `hid:/dev/hidrawN`, `udp:HOST:PORT`, or wrap an already open CtapDevice / Key.

    With `auto` and several keys plugged in, `credentials` ((rp id, credential id) pairs of the user) pick the key
    that holds one of them (up=false probe, no PIN, no touch).
    """
    if isinstance(spec, Key):
        return spec
    if isinstance(spec, CtapDevice):
        return Key(spec)
    if not isinstance(spec, str):
        raise DeviceSpecInvalid(f"Not a device spec: {spec!r}.")
    if spec.startswith("udp:"):
        from .udp import open_udp_device, parse_udp_spec

        host, port = parse_udp_spec(spec)
        return Key(open_udp_device(host, port, timeout=timeout), spec)
    if spec.startswith("hid:"):
        return Key(_open_hid(spec[4:]), spec)
    if spec == "auto":
        return _auto(credentials)
    raise DeviceSpecInvalid(f"Not a device spec: {spec!r} (expected auto, hid:/dev/hidrawN or udp:HOST:PORT).")


def _open_hid(path: str) -> CtapDevice:
    if not path.startswith("/dev/"):
        raise DeviceSpecInvalid(f"Not a HID device spec: hid:{path} (expected hid:/dev/hidrawN).")
    from fido2.hid import open_device

    try:
        return open_device(path)
    except Exception as exc:  # noqa: BLE001 - OSError, ConnectionFailure, a non-FIDO device
        raise NoKeyFound(f"No FIDO security key at {path} ({type(exc).__name__}).") from None


def list_hid_keys() -> list[CtapDevice]:
    from fido2.hid import CtapHidDevice

    try:
        return list(CtapHidDevice.list_devices())
    except Exception:  # noqa: BLE001 - no hidraw support at all counts as no key
        return []


def _auto(credentials: Sequence[tuple[str, bytes]], devices: Sequence[CtapDevice] | None = None) -> Key:
    devices = list_hid_keys() if devices is None else list(devices)
    if not devices:
        raise NoKeyFound("No security key found: plug one in, or name one with --device.")
    if len(devices) == 1:
        return Key(devices[0], "auto")
    return pick_key([Key(d, "auto") for d in devices], credentials)


def pick_key(keys: Sequence[Key], credentials: Sequence[tuple[str, bytes]]) -> Key:
    """The first of several keys holding one of `credentials`; the others are closed."""
    chosen = None
    if credentials:
        for key in keys:
            if chosen is None and key.holds_any(credentials):
                chosen = key
    for key in keys:
        if key is not chosen:
            key.close()
    if chosen is None:
        if credentials:
            raise CredentialNotOnKey()
        raise NoKeyFound(
            f"{len(keys)} security keys are plugged in: unplug the others, or name one with --device hid:/dev/hidrawN."
        )
    return chosen


@contextlib.contextmanager
def opened_key(
    spec: str | CtapDevice | Key, *, timeout: float = DEFAULT_TIMEOUT, credentials: Sequence[tuple[str, bytes]] = ()
) -> Iterator[Key]:
    """open_key for the length of a flow: the key is closed at the end only when this opened it (from a spec
    string). A CtapDevice or Key the caller passed in is the caller's, and stays open for its next use."""
    key = open_key(spec, timeout=timeout, credentials=credentials)
    try:
        yield key
    finally:
        if isinstance(spec, str):
            key.close()
