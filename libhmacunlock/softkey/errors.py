"""Errors of the software key: a CTAP status to answer with, and a state file that cannot be used."""

from __future__ import annotations

from fido2.ctap import CtapError

ERR = CtapError.ERR


class CtapFailure(Exception):
    """Raised inside the authenticator to answer a request with a CTAP status byte (never leaves `process`)."""

    def __init__(self, code: ERR) -> None:
        super().__init__(code.name)
        self.code = code


class KeyStateError(Exception):
    """The software key's state file cannot be used; the message names the file, never a secret."""


class KeyStateCorrupt(KeyStateError):
    """The state file exists but does not parse: it is reported, never replaced."""
