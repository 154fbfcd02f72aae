"""`SoftKeyDevice`: the software key as a python-fido2 `CtapDevice`, in process (no transport in between)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from threading import Event

from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID

from .authenticator import Authenticator
from .presence import PresencePolicy
from .profiles import Profile
from .state import KeyState


class SoftKeyDevice(CtapDevice):
    """Speaks CTAP2 (CBOR) only, like a key without U2F; CTAPHID framing is the UDP transport's business."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        presence: PresencePolicy | None = None,
        profile: Profile | str | None = None,
    ) -> SoftKeyDevice:
        """The key whose state is at `path`, answering as `profile` (softkey/profiles.py; default ctap21)."""
        return cls(Authenticator(KeyState.open(path), presence or PresencePolicy.approve(), profile))

    @property
    def capabilities(self) -> int:
        return CAPABILITY.CBOR | CAPABILITY.NMSG

    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: Event | None = None,
        on_keepalive: Callable[[STATUS], None] | None = None,
    ) -> bytes:
        if cmd != CTAPHID.CBOR:
            # MSG (U2F) is not offered (NMSG); other CTAPHID commands belong to the HID layer
            raise CtapError(CtapError.ERR.INVALID_COMMAND)
        return self.authenticator.process(data, keepalive=_once_per_status(on_keepalive), cancel=event)

    @classmethod
    def list_devices(cls) -> Iterator[SoftKeyDevice]:
        # an in-process key is opened by path, never discovered
        return iter(())


def _once_per_status(callback: Callable[[STATUS], None] | None) -> Callable[[STATUS], None] | None:
    """CtapDevice.call promises one callback per run of identical keepalive statuses."""
    if callback is None:
        return None
    last: list[STATUS] = []

    def on_keepalive(status: STATUS) -> None:
        if not last or last[-1] != status:
            last[:] = [status]
            callback(status)

    return on_keepalive
