"""`KeyState`: everything the software key keeps across restarts, in one JSON file (0600, written atomically).

Held: discoverable credentials, the secret that wraps non-discoverable credential ids, the PIN hash as CTAP stores
it (LEFT(SHA-256(pin), 16)), the PIN retry counter, the global signature counter, the AAGUID and the attestation
chain (a self-signed CA and a batch certificate + key). A file that does not parse raises `KeyStateCorrupt`; it is
never replaced behind the user's back.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from .errors import KeyStateCorrupt, KeyStateError

FORMAT_VERSION = 1
PIN_RETRIES_MAX = 8
UINT32 = 1 << 32  # the signature counter is 32 bits on the wire: a stored one at or above this would wrap
MAX_STATE_SIZE = 16 << 20
MAX_DEPTH = 8  # the state is 4 deep; anything deeper is not ours (checked without recursion)
MAX_CREDENTIALS = 4096
_TEMP = re.compile(r"[a-z0-9_]{8}")  # tempfile.mkstemp's random part


@dataclass
class StoredCredential:
    """A discoverable credential as the key keeps it."""

    credential_id: bytes
    rp_id: str
    rp_name: str | None
    user_id: bytes
    user_name: str | None
    user_display_name: str | None
    private_key: bytes = field(repr=False)  # the P-256 scalar, 32 bytes
    cred_protect: int  # 1..3
    cred_random_uv: bytes | None = field(default=None, repr=False)  # CredRandomWithUV (None: no hmac-secret)
    cred_random_no_uv: bytes | None = field(default=None, repr=False)  # hmac-secret CredRandomWithoutUV
    serial: int = 0  # creation order: larger is newer
    resident: bool = True  # False: a non-discoverable credential re-derived from its id (never stored)
    _key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        # derive once: the scalar multiplication is the costly part
        if self._key is None:
            self._key = ec.derive_private_key(int.from_bytes(self.private_key, "big"), ec.SECP256R1())
        return self._key

    def user_entity(self, with_names: bool) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.user_id}
        if with_names:
            if self.user_name is not None:
                user["name"] = self.user_name
            if self.user_display_name is not None:
                user["displayName"] = self.user_display_name
        return user

    def to_json(self) -> dict[str, Any]:
        return {
            "id": _b64(self.credential_id),
            "rp_id": self.rp_id,
            "rp_name": self.rp_name,
            "user_id": _b64(self.user_id),
            "user_name": self.user_name,
            "user_display_name": self.user_display_name,
            "private_key": _b64(self.private_key),
            "cred_protect": self.cred_protect,
            "cred_random_uv": _b64(self.cred_random_uv) if self.cred_random_uv else None,
            "cred_random_no_uv": _b64(self.cred_random_no_uv) if self.cred_random_no_uv else None,
            "serial": self.serial,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StoredCredential:
        def opt(name: str) -> bytes | None:
            return None if obj[name] is None else _unb64(obj[name])

        cred = cls(
            credential_id=_unb64(obj["id"]),
            rp_id=_str(obj["rp_id"]),
            rp_name=_opt_str(obj["rp_name"]),
            user_id=_unb64(obj["user_id"]),
            user_name=_opt_str(obj["user_name"]),
            user_display_name=_opt_str(obj["user_display_name"]),
            private_key=_unb64(obj["private_key"]),
            cred_protect=_int(obj["cred_protect"]),
            cred_random_uv=opt("cred_random_uv"),
            cred_random_no_uv=opt("cred_random_no_uv"),
            serial=_int(obj["serial"]),
        )
        if len(cred.private_key) != 32 or cred.cred_protect not in (1, 2, 3):
            raise ValueError("bad credential")
        if (
            not 1 <= len(cred.credential_id) <= 1023
            or not 1 <= len(cred.user_id) <= 64
            or not 0 <= cred.serial < UINT32
        ):
            raise ValueError("bad credential")
        if any(r is not None and len(r) != 32 for r in (cred.cred_random_uv, cred.cred_random_no_uv)):
            raise ValueError("bad credential")
        return cred


@dataclass
class Attestation:
    """The attestation chain: a self-signed CA (its key is not kept) and the batch certificate + key."""

    ca_cert: bytes  # DER
    batch_cert: bytes  # DER
    batch_key: bytes = field(repr=False)  # P-256 scalar, 32 bytes
    _key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        if self._key is None:
            self._key = ec.derive_private_key(int.from_bytes(self.batch_key, "big"), ec.SECP256R1())
        return self._key


@dataclass
class KeyState:
    """The persistent state of one software key. Change fields, then call `save()` once."""

    path: Path
    aaguid: bytes
    wrap_secret: bytes = field(repr=False)  # 32 bytes: wraps non-discoverable credential ids; renewed by reset
    attestation: Attestation
    pin_hash: bytes | None = field(default=None, repr=False)
    pin_retries: int = PIN_RETRIES_MAX
    sign_count: int = 0
    next_serial: int = 1
    credentials: list[StoredCredential] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> KeyState:
        """Load the key at `path`, or create a new key there (fresh AAGUID and attestation) if it is missing."""
        path = Path(path)
        try:
            raw = _read_regular(path)
        except FileNotFoundError:
            state = cls.create(path)
            try:
                state.save()
            except OSError as exc:
                raise KeyStateError(f"cannot create the software key state {path}: {exc.strerror}") from None
            return state
        except OSError as exc:
            raise KeyStateError(f"cannot read the software key state {path}: {exc.strerror}") from None
        return cls._parse(path, raw)

    def reload(self) -> None:
        """Drop changes not yet saved (a save that failed): memory goes back to what the file holds."""
        fresh = self._parse(self.path, _read_regular(self.path))
        for name in (
            "aaguid",
            "wrap_secret",
            "attestation",
            "pin_hash",
            "pin_retries",
            "sign_count",
            "next_serial",
            "credentials",
        ):
            setattr(self, name, getattr(fresh, name))

    @classmethod
    def create(cls, path: Path) -> KeyState:
        from .attestation import new_attestation  # cert generation only matters when a key is born

        aaguid = os.urandom(16)
        return cls(path=path, aaguid=aaguid, wrap_secret=os.urandom(32), attestation=new_attestation(aaguid))

    @classmethod
    def _parse(cls, path: Path, raw: bytes) -> KeyState:
        try:
            obj = json.loads(raw)
            _check_depth(obj)
            if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
                raise ValueError("unknown format")
            att = obj["attestation"]
            state = cls(
                path=path,
                aaguid=_unb64(obj["aaguid"]),
                wrap_secret=_unb64(obj["wrap_secret"]),
                attestation=Attestation(
                    ca_cert=_unb64(att["ca_cert"]),
                    batch_cert=_unb64(att["batch_cert"]),
                    batch_key=_unb64(att["batch_key"]),
                ),
                pin_hash=None if obj["pin_hash"] is None else _unb64(obj["pin_hash"]),
                pin_retries=_int(obj["pin_retries"]),
                sign_count=_int(obj["sign_count"]),
                next_serial=_int(obj["next_serial"]),
                credentials=[StoredCredential.from_json(c) for c in _list(obj["credentials"])],
            )
            state._check()
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError):
            # the cause may quote file content (secrets): keep it out of the message and the traceback
            raise KeyStateCorrupt(f"the software key state {path} is corrupt; it was left as it is") from None
        return state

    def _check(self) -> None:
        if len(self.aaguid) != 16 or len(self.wrap_secret) != 32 or len(self.attestation.batch_key) != 32:
            raise ValueError("bad length")
        if self.pin_hash is not None and len(self.pin_hash) != 16:
            raise ValueError("bad pin hash")
        if not 0 <= self.pin_retries <= PIN_RETRIES_MAX or not 0 <= self.sign_count < UINT32:
            raise ValueError("bad counter")
        if not 0 <= self.next_serial < UINT32 or len(self.credentials) > MAX_CREDENTIALS:
            raise ValueError("bad counter")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "aaguid": _b64(self.aaguid),
            "wrap_secret": _b64(self.wrap_secret),
            "attestation": {
                "ca_cert": _b64(self.attestation.ca_cert),
                "batch_cert": _b64(self.attestation.batch_cert),
                "batch_key": _b64(self.attestation.batch_key),
            },
            "pin_hash": None if self.pin_hash is None else _b64(self.pin_hash),
            "pin_retries": self.pin_retries,
            "sign_count": self.sign_count,
            "next_serial": self.next_serial,
            "credentials": [c.to_json() for c in self.credentials],
        }

    def save(self) -> None:
        """Write atomically: temp file (0600) in the same directory, fsync, rename, fsync the directory.

        The temp file is locked (flock) while it is written, so the next save can tell a killed save's leftover
        (a full copy of the state, private keys included) from one in progress, and removes it.
        """
        data = json.dumps(self.to_json(), indent=1).encode()
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)  # mkstemp creates it 0600
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _remove_stale_temp_files(self.path, keep=tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def reset(self) -> None:
        """authenticatorReset: forget credentials and PIN; keep the AAGUID, attestation and signature counter
        (a counter that went back would look like a cloned key to every RP)."""
        self.wrap_secret = os.urandom(32)
        self.pin_hash = None
        self.pin_retries = PIN_RETRIES_MAX
        self.credentials = []

    # --- credentials ---------------------------------------------------------------------------------------

    def find_credential(self, credential_id: bytes) -> StoredCredential | None:
        for cred in self.credentials:
            if cred.credential_id == credential_id:
                return cred
        return None

    def credentials_for(self, rp_id: str) -> list[StoredCredential]:
        """The RP's discoverable credentials, newest first."""
        return sorted((c for c in self.credentials if c.rp_id == rp_id), key=lambda c: -c.serial)


def _read_regular(path: Path) -> bytes:
    """The file's bytes, refusing before any read what is not a regular file (a FIFO would block the key's
    start, a device would never end). FileNotFoundError passes through (a new key is made there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        raise KeyStateError(f"cannot read the software key state {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyStateError(f"the software key state {path} is not a regular file; it was left as it is")
        if st.st_size > MAX_STATE_SIZE:
            raise KeyStateCorrupt(f"the software key state {path} is larger than any state; it was left as it is")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(MAX_STATE_SIZE + 1)
    finally:
        os.close(fd)


def _check_depth(obj: Any) -> None:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise ValueError("nested too deep")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("not a list")
    return value


def _remove_stale_temp_files(path: Path, keep: str) -> None:
    """Temp files of saves that were killed: `.NAME.XXXXXXXX` that no live save holds locked."""
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        candidate = path.parent / name
        if not name.startswith(prefix) or not _TEMP.fullmatch(name[len(prefix) :]) or str(candidate) == keep:
            continue
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a save in progress: BlockingIOError
            if stat.S_ISREG(os.fstat(fd).st_mode):
                with contextlib.suppress(OSError):
                    os.unlink(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("not base64 text")
    return base64.b64decode(text, validate=True)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an int")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)
