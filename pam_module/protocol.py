"""The helper's side of the framed protocol it speaks with pam_hmacunlock.so (PROTOCOL.md is the contract).

Standard library only: this module is imported before the PIN prompt goes out, on the sign-in hot path.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from typing import NamedTuple

MAX_PAYLOAD = 4096
HEADER_LEN = 3
MAX_TRIES_LIMIT = 10
DEFAULT_MAX_TRIES = 2  # three wrong PINs in a row soft-lock a key: one sign-in must never do that on its own
DEFAULT_PIN_FLOOR = 3  # = libhmacunlock.pinguard.DEFAULT_FLOOR (not imported: this module stays standard library)
MAX_PIN_FLOOR = 8


class ProtocolError(Exception):
    """The other side sent something this protocol does not allow; nothing it said is trusted."""


class Frame(bytes, enum.Enum):
    # module -> helper
    REQUEST = b"Q"
    SECRET = b"S"
    CONV_FAILED = b"C"
    # helper -> module
    PROMPT_SECRET = b"P"
    INFO = b"I"
    ERROR = b"E"
    LOG = b"L"
    VERDICT = b"V"


class Verdict(str, enum.Enum):
    SUCCESS = "success"
    AUTH_ERR = "auth_err"
    AUTHINFO_UNAVAIL = "authinfo_unavail"
    USER_UNKNOWN = "user_unknown"  # only with nouserok; the module turns it into PAM_IGNORE
    SYSTEM_ERR = "system_err"


_FROM_MODULE = {Frame.REQUEST, Frame.SECRET, Frame.CONV_FAILED}


class Channel:
    """Frames over two descriptors (the module gives the helper one socket as both stdin and stdout)."""

    def __init__(self, rfd: int = 0, wfd: int = 1) -> None:
        self._rfd, self._wfd = rfd, wfd

    def _read_exact(self, n: int) -> bytearray:
        buf = bytearray()
        while len(buf) < n:
            chunk = os.read(self._rfd, n - len(buf))
            if not chunk:
                raise ProtocolError("the module closed the channel")
            buf += chunk
        return buf

    def read(self) -> tuple[Frame, bytearray]:
        header = self._read_exact(HEADER_LEN)
        try:
            kind = Frame(bytes(header[:1]))
        except ValueError:
            raise ProtocolError(f"unknown frame type {bytes(header[:1])!r}") from None
        length = int.from_bytes(header[1:], "big")
        if kind not in _FROM_MODULE or length > MAX_PAYLOAD:
            raise ProtocolError(f"unexpected frame {kind.name} of {length} bytes")
        payload = self._read_exact(length) if length else bytearray()
        if 0 in payload:
            raise ProtocolError("NUL byte in a frame")
        return kind, payload

    def send(self, kind: Frame, text: str = "") -> None:
        payload = text.encode("utf-8", "replace").replace(b"\0", b"")
        if len(payload) > MAX_PAYLOAD:  # messages are for people: a cut one is better than none
            payload = payload[:MAX_PAYLOAD].decode("utf-8", "ignore").encode()
        frame = memoryview(kind.value + len(payload).to_bytes(2, "big") + payload)
        while frame:
            frame = frame[os.write(self._wfd, frame) :]

    def end(self) -> None:
        """End of file for the module now (after the verdict), even while another process still holds the
        descriptor (the writer a spawned helper forks): shutdown(2) of the socket. Not a socket (a pipe in a test):
        the write end is closed."""
        import socket

        try:
            sock = socket.socket(fileno=self._wfd)
        except OSError:
            os.close(self._wfd)
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the module has gone already
        finally:
            sock.detach()

    def read_secret(self) -> str | None:
        """The answer to a PROMPT_SECRET: the secret, or None when the conversation failed."""
        kind, payload = self.read()
        if kind is Frame.CONV_FAILED and not payload:
            return None
        if kind is not Frame.SECRET:
            raise ProtocolError(f"expected a secret, got {kind.name}")
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("secret is not UTF-8") from None
        finally:
            payload[:] = bytes(len(payload))  # the str copy is the library's; drop ours now


class Request(NamedTuple):  # a NamedTuple, not a dataclass: dataclasses costs ~9 ms of start-up (inspect)
    user: str
    store: str | None = None
    device: str | None = None
    rp_id: str | None = None
    max_tries: int = DEFAULT_MAX_TRIES
    cue: bool = False
    cue_prompt: str | None = None
    nouserok: bool = False
    debug: bool = False
    profile: str | None = None
    pin_floor: int = DEFAULT_PIN_FLOOR
    ruid: int | None = None  # the PAM host's real uid (under su/sudo: the caller)
    silent: bool = False  # PAM_SILENT: what must be seen rides in the next prompt or an E frame
    touch_first: bool = False  # a touch before the PIN (the module decides: touch_first=auto|always|never)
    profile_record: bool = False  # PAM's `profile` with no value (or profile=record): the record's directories
    session: str | None = None  # "open" / "close": a session event for lock_on_logout, not a sign-in
    pid: int | None = None  # the PAM host's pid: whose session (sessions.py), and whose sign-in unlocked a profile

    @classmethod
    def parse(cls, payload: bytes, defaults: Mapping[str, object] | None = None) -> Request:
        """Strict: known keys only, each at most once, every line `key=value`, user required. `defaults` (the
        configuration file's) fill in what the request does not say: the PAM line's options win."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("request is not UTF-8") from None
        if not text.endswith("\n"):
            raise ProtocolError("request must end with a newline")
        fields: dict[str, object] = {}
        for line in text[:-1].split("\n"):
            key, sep, value = line.partition("=")
            if not sep or not value or key not in _PARSERS or key in fields:
                raise ProtocolError(f"bad request line {key!r}")
            fields[key] = _PARSERS[key](value)
        if "user" not in fields:
            raise ProtocolError("request names no user")
        if "profile" in fields and "profile_record" in fields:
            raise ProtocolError("profile and profile_record contradict each other")
        return cls(**{**(defaults or {}), **fields})  # type: ignore[arg-type]


def _flag(value: str) -> bool:
    if value != "1":
        raise ProtocolError("a flag's value must be 1")
    return True


def _tries(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_TRIES_LIMIT:
        raise ProtocolError(f"max_tries must be 1..{MAX_TRIES_LIMIT}")
    return int(value)


def _floor(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= MAX_PIN_FLOOR:
        raise ProtocolError(f"pin_floor must be 0..{MAX_PIN_FLOOR}")
    return int(value)


def _uid(value: str) -> int:
    if not value.isdigit() or int(value) >= 1 << 32:
        raise ProtocolError("ruid must be a uid")
    return int(value)


def _user(value: str) -> str:
    if len(value) > 256 or any(c in "/=" or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ProtocolError("malformed user name")
    return value


def _session(value: str) -> str:
    if value not in ("open", "close"):
        raise ProtocolError("session must be open or close")
    return value


def _pid(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 1 << 31:
        raise ProtocolError("pid must be a process id")
    return int(value)


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ProtocolError("a path must be absolute")
    return value


_PARSERS: dict[str, Callable[[str], object]] = {
    "user": _user,
    "store": _absolute,
    "device": str,
    "rp_id": str,
    "max_tries": _tries,
    "cue": _flag,
    "cue_prompt": str,
    "nouserok": _flag,
    "debug": _flag,
    "profile": _absolute,
    "pin_floor": _floor,
    "ruid": _uid,
    "silent": _flag,
    "touch_first": _flag,
    "profile_record": _flag,
    "session": _session,
    "pid": _pid,
}
