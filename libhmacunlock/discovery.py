"""Finding the security key a device spec names: `auto`, `hid:/dev/hidrawN`, `udp:HOST:PORT`, or one already open.

device.py is the key once it is open (the only CTAP caller); this module only finds and opens it. `auto` with
several USB keys probes each with an up=false getAssertion for the user's credentials (no PIN, no touch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from fido2.ctap import CtapDevice

from .device import Key
from .errors import DeviceSpecInvalid, HmacUnlockError, NoKeyFound, NoKeyHoldsCredential
from .keyinfo import InfoCache, hid_identity

DEFAULT_TIMEOUT = 5.0


def open_key(
    spec: str | CtapDevice | Key,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    credentials: Sequence[tuple[str, bytes]] = (),
    info_cache: InfoCache | None = None,
    aaguids: set[bytes] | frozenset[bytes] = frozenset(),
) -> Key:
    """Open `auto`, `hid:/dev/hidrawN`, `udp:HOST:PORT`, or wrap an already open CtapDevice / Key.

    With `auto` and several keys plugged in, `credentials` ((rp id, credential id) pairs of the user) pick the key
    that holds one of them (up=false probe, no PIN, no touch). With `info_cache`, a key opened from a spec takes
    its getInfo answer from there when the cache knows that device with one of `aaguids` (keyinfo.py).
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
        udp = open_udp_device(host, port, timeout=timeout)
        return Key(udp, spec, info_cache=info_cache, identity=spec, aaguids=aaguids)
    if spec.startswith("hid:"):
        hid = _open_hid(spec[4:])
        return Key(hid, spec, info_cache=info_cache, identity=hid_identity(spec[4:]), aaguids=aaguids)
    if spec == "auto":
        return _auto(credentials, info_cache=info_cache, aaguids=aaguids)
    raise DeviceSpecInvalid(f"Not a device spec: {spec!r} (expected auto, hid:/dev/hidrawN or udp:HOST:PORT).")


def _open_hid(path: str) -> CtapDevice:
    if not path.startswith("/dev/"):
        raise DeviceSpecInvalid(f"Not a HID device spec: hid:{path} (expected hid:/dev/hidrawN).")
    from fido2.hid import open_device

    try:
        return open_device(path)
    except Exception as exc:  # noqa: BLE001 - OSError, ConnectionFailure, a non-FIDO device
        raise NoKeyFound(hid_open_failure(path, exc)) from None


def hid_open_failure(path: str, exc: BaseException) -> str:
    """Why `path` did not open as a FIDO key, in words, and what to do (never the bare exception name)."""
    import errno

    code = getattr(exc, "errno", None)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return f"No device at {path}: plug the key in; 'hmacunlock key info --device auto' finds it by itself."
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"Permission denied to open {path}: run the command as root, or give your user access to security keys "
            "(the udev rules of Debian's libfido2-1 do it for the seat's user)."
        )
    if code in (errno.ENOTTY, errno.EINVAL):
        return f"{path} is not a hidraw device; a security key is /dev/hidrawN ('ls -l /dev/hidraw*')."
    if code == errno.EBUSY:
        return f"{path} is busy: another program holds the key; close it and try again."
    return f"{path} does not answer as a FIDO security key (is it a keyboard or another HID device?)."


# A few common keys' AAGUIDs (FIDO Alliance Metadata Service); any other key is shown by its AAGUID alone.
AAGUID_NAMES = {
    "cb69481e-8ff7-4039-93ec-0a2729a154a8": "YubiKey 5 (USB-A, no NFC; firmware 5.1)",
    "fa2b99dc-9e39-4257-8f92-4a30d23c4118": "YubiKey 5 NFC (firmware 5.1)",
    "ee882879-721c-4913-9775-3dfcce97072a": "YubiKey 5 series (firmware 5.2, 5.4)",
    "8876631b-d4a0-427f-5773-0ec71c9e0279": "Solo (SoloKeys)",
}


class PresentKey(NamedTuple):
    """A plugged-in key as `--device list` shows it: the spec that opens it, what it calls itself, its model."""

    spec: str
    product: str
    aaguid: str | None  # None: it did not answer getInfo
    model: str | None  # AAGUID_NAMES' name for the AAGUID, when known


def present_keys(devices: Sequence[CtapDevice] | None = None) -> list[PresentKey]:
    """The USB keys plugged in (`--device list`), each asked for its getInfo (no PIN, no touch), then closed."""
    found = []
    for device in list_hid_keys() if devices is None else devices:
        descriptor = getattr(device, "descriptor", None)
        spec = f"hid:{getattr(descriptor, 'path', '?')}"
        product = getattr(descriptor, "product_name", None) or "unnamed HID device"
        aaguid: str | None = None
        try:
            with Key(device, spec) as key:
                aaguid = str(key.info.aaguid)
        except HmacUnlockError:
            pass  # listed all the same, as a device that did not answer
        found.append(PresentKey(spec, product, aaguid, AAGUID_NAMES.get(aaguid or "")))
    return found


def list_hid_keys() -> list[CtapDevice]:
    from fido2.hid import CtapHidDevice

    try:
        return list(CtapHidDevice.list_devices())
    except Exception:  # noqa: BLE001 - no hidraw support at all counts as no key
        return []


def _auto(
    credentials: Sequence[tuple[str, bytes]],
    devices: Sequence[CtapDevice] | None = None,
    info_cache: InfoCache | None = None,
    aaguids: set[bytes] | frozenset[bytes] = frozenset(),
) -> Key:
    devices = list_hid_keys() if devices is None else list(devices)
    if not devices:
        raise NoKeyFound("No security key found: plug one in, or name one with --device.")
    keys = [Key(d, "auto", info_cache=info_cache, identity=_hid_path_identity(d), aaguids=aaguids) for d in devices]
    if len(keys) == 1:
        return keys[0]
    return pick_key(keys, credentials)


def _hid_path_identity(device: CtapDevice) -> str | None:
    """A listed HID key's identity for the getInfo cache (keyinfo.hid_identity of its hidraw node)."""
    path = getattr(getattr(device, "descriptor", None), "path", None)
    return hid_identity(path) if isinstance(path, str) else None


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
    if chosen is not None:
        chosen.probed = True  # the PIN guard's probe, done: unlock does not repeat it
    if chosen is None:
        if credentials:
            raise NoKeyHoldsCredential()
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
