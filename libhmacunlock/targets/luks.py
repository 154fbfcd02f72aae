"""A LUKS2 volume, through the real `cryptsetup` (Debian cryptsetup-bin 2.6).

Everything here goes through the `cryptsetup` command, never libcryptsetup bindings, so the volume is changed
exactly as an administrator would change it. Key material reaches cryptsetup on stdin (`--key-file=-`) or on an
inherited pipe named `/dev/fd/N`; never in argv, the environment or a temporary file.

Two token types are understood (docs/luks-and-profile.md):
- `hmacunlock`: our own; names the user, the keyslot and the purpose label whose derived key is the passphrase.
- `systemd-fido2`: systemd-cryptenroll's; the passphrase is base64 of the key's raw hmac-secret output.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import TargetError

CRYPTSETUP = "cryptsetup"
TOKEN_TYPE = "hmacunlock"  # noqa: S105 - a LUKS token type, not a secret
TOKEN_VERSION = 1
SYSTEMD_TOKEN_TYPE = "systemd-fido2"  # noqa: S105 - a LUKS token type, not a secret
SYSTEMD_RP_ID = "io.systemd.cryptsetup"
# Our passphrases are 256-bit random: a slow PBKDF adds nothing but seconds at boot, so like systemd-cryptenroll
# (cryptsetup_set_minimal_pbkdf) the keyslots we add use PBKDF2 at its minimum.
MINIMAL_PBKDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--hash", "sha512")
_TIMEOUT = 120


# --- passphrases ----------------------------------------------------------------------------------------------


def purpose_label(volume_uuid: str) -> str:
    """The HKDF purpose label of one volume: its own key, useless for any other volume."""
    return f"luks:{volume_uuid.lower()}"


def encode_passphrase(secret: bytes) -> bytes:
    """Base64 (standard alphabet, padded) of a derived key or hmac-secret output.

    ASCII with no newline or white space, so the same bytes come through cryptsetup's `--key-file` (read whole),
    its interactive prompt (read to the newline) and a crypttab keyscript; and it is systemd's own encoding
    (base64mem of the hmac output), so one rule serves both token types.
    """
    return base64.b64encode(secret)


def passphrase_for(unlock_key: bytes, volume_uuid: str) -> bytes:
    """The keyslot passphrase of `volume_uuid` for the user whose unlock key this is."""
    from ..keys import derive

    return encode_passphrase(derive(unlock_key, purpose_label(volume_uuid)))


# --- tokens ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HmacUnlockToken:
    """Our token: which user's derived key opens which keyslot."""

    user: str
    keyslot: int
    purpose: str
    token_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": TOKEN_TYPE,
            "keyslots": [str(self.keyslot)],
            "hmacunlock-version": TOKEN_VERSION,
            "hmacunlock-user": self.user,
            "hmacunlock-purpose": self.purpose,
            "hmacunlock-encoding": "base64",
        }

    @classmethod
    def from_json(cls, token_id: int, obj: dict[str, Any]) -> HmacUnlockToken:
        try:
            if obj.get("hmacunlock-version") != TOKEN_VERSION or obj.get("hmacunlock-encoding") != "base64":
                raise ValueError("unknown version or encoding")
            (slot,) = obj["keyslots"]
            user, purpose = obj["hmacunlock-user"], obj["hmacunlock-purpose"]
            if not isinstance(user, str) or not isinstance(purpose, str):
                raise ValueError("user and purpose must be strings")
            return cls(user=user, keyslot=int(slot), purpose=purpose, token_id=token_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(f"LUKS2 token {token_id} of type {TOKEN_TYPE!r} is malformed ({exc}).") from None


@dataclass(frozen=True)
class SystemdFido2Token:
    """systemd-cryptenroll's token (src/cryptenroll/cryptenroll-fido2.c): a non-resident credential, salt1 only."""

    keyslot: int
    credential_id: bytes
    salt: bytes
    rp_id: str = SYSTEMD_RP_ID
    client_pin_required: bool = True
    up_required: bool = True
    uv_required: bool = False
    token_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": SYSTEMD_TOKEN_TYPE,
            "keyslots": [str(self.keyslot)],
            "fido2-credential": base64.b64encode(self.credential_id).decode(),
            "fido2-salt": base64.b64encode(self.salt).decode(),
            "fido2-rp": self.rp_id,
            "fido2-clientPin-required": self.client_pin_required,
            "fido2-up-required": self.up_required,
            "fido2-uv-required": self.uv_required,
        }

    @classmethod
    def from_json(cls, token_id: int, obj: dict[str, Any]) -> SystemdFido2Token:
        # systemd's own defaults for fields older enrollments lack (cryptsetup-fido2.c): PIN and UP required.
        try:
            slots = [int(s) for s in obj["keyslots"]]
            if len(slots) != 1:
                raise ValueError(f"{len(slots)} keyslots")
            return cls(
                keyslot=slots[0],
                credential_id=base64.b64decode(obj["fido2-credential"], validate=True),
                salt=base64.b64decode(obj["fido2-salt"], validate=True),
                rp_id=str(obj.get("fido2-rp", SYSTEMD_RP_ID)),
                client_pin_required=bool(obj.get("fido2-clientPin-required", True)),
                up_required=bool(obj.get("fido2-up-required", True)),
                uv_required=bool(obj.get("fido2-uv-required", False)),
                token_id=token_id,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(f"LUKS2 token {token_id} of type {SYSTEMD_TOKEN_TYPE!r} is malformed ({exc}).") from None


# --- the volume -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    """What authorises adding a keyslot: an existing passphrase (sent on stdin) or a key file of the volume."""

    passphrase: bytes | None = field(default=None, repr=False)
    key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.passphrase is None) == (self.key_file is None):
            raise ValueError("give exactly one of passphrase or key_file")


class Volume:
    """One LUKS2 volume (a block device or an image file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    # -- reading --

    def metadata(self) -> dict[str, Any]:
        self.require_luks2()
        out = self._run(["luksDump", "--dump-json-metadata", self.path], what="read the LUKS2 header of")
        try:
            metadata: dict[str, Any] = json.loads(out)
            return metadata
        except ValueError:
            raise TargetError(f"{self.path}: cryptsetup printed LUKS2 metadata that is not JSON.") from None

    def require_luks2(self) -> None:
        """TargetError naming the fix for a LUKS1 volume or a file that is no LUKS volume at all, before cryptsetup
        says "Dump operation is not supported" about it. A header that cannot be read is left to cryptsetup."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(8)
        except OSError:
            return
        if head[:6] != LUKS_MAGIC:
            raise TargetError(f"{self.path} is not a LUKS volume (no LUKS header at its start).")
        version = int.from_bytes(head[6:8], "big")
        if version == 1:
            raise TargetError(
                f"{self.path} is a LUKS1 volume; hmacunlock needs LUKS2 (its tokens hold what opens the keyslot). "
                f"Back up the header, then convert it: 'cryptsetup convert --type luks2 {self.path}'."
            )

    def uuid(self) -> str:
        return self._run(["luksUUID", self.path], what="read the UUID of").strip().lower()

    def keyslots(self) -> list[int]:
        return sorted(int(k) for k in self.metadata().get("keyslots", {}))

    def raw_tokens(self) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in self.metadata().get("tokens", {}).items()}

    def hmacunlock_tokens(self) -> list[HmacUnlockToken]:
        return [
            HmacUnlockToken.from_json(i, t) for i, t in sorted(self.raw_tokens().items()) if t.get("type") == TOKEN_TYPE
        ]

    def systemd_tokens(self) -> list[SystemdFido2Token]:
        return [
            SystemdFido2Token.from_json(i, t)
            for i, t in sorted(self.raw_tokens().items())
            if t.get("type") == SYSTEMD_TOKEN_TYPE
        ]

    def token_for(self, user: str, tokens: Sequence[HmacUnlockToken] | None = None) -> HmacUnlockToken | None:
        """`user`'s token, among `tokens` when the caller has already read them (saves a luksDump)."""
        tokens = self.hmacunlock_tokens() if tokens is None else tokens
        return next((t for t in tokens if t.user == user), None)

    # -- passphrases --

    def test_passphrase(self, passphrase: bytes, keyslot: int | None = None) -> bool:
        """True when `passphrase` opens `keyslot` (or any keyslot); needs no device-mapper."""
        argv = ["open", "--test-passphrase", "--key-file=-", self.path]
        if keyslot is not None:
            argv[1:1] = ["--key-slot", str(keyslot)]
        proc = self._call(argv, stdin=passphrase)
        if proc.returncode == 0:
            return True
        if proc.returncode == 2:  # cryptsetup: "No key available with this passphrase"
            return False
        raise self._failure(proc, "check a passphrase on")

    def add_keyslot(self, new_passphrase: bytes, existing: Existing) -> int:
        """Add a keyslot for `new_passphrase`, authorised by `existing`; returns the new slot's number."""
        if len(new_passphrase) > 4096:  # written before cryptsetup starts: it must fit in the pipe's buffer
            raise ValueError("a keyslot passphrase is at most 4096 bytes")
        before = set(self.keyslots())
        read_fd, write_fd = os.pipe()
        try:
            # The new key on a pipe that cryptsetup opens as /dev/fd/N; it is small, so the write cannot block.
            os.write(write_fd, new_passphrase)
            os.close(write_fd)
            write_fd = -1
            existing_arg = "--key-file=-" if existing.passphrase is not None else f"--key-file={existing.key_file}"
            argv = ["luksAddKey", "--batch-mode", *MINIMAL_PBKDF, existing_arg, self.path, f"/dev/fd/{read_fd}"]
            proc = self._call(argv, stdin=existing.passphrase or b"", pass_fds=(read_fd,))
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        if proc.returncode == 2:
            what = "passphrase" if existing.passphrase is not None else "key file"
            raise TargetError(f"{self.path}: the existing {what} does not open the volume; no keyslot was added.")
        if proc.returncode != 0:
            raise self._failure(proc, "add a keyslot to")
        added = set(self.keyslots()) - before
        if len(added) != 1:
            raise TargetError(f"{self.path}: could not tell which keyslot cryptsetup added.")
        return added.pop()

    def kill_slot(self, keyslot: int) -> None:
        """Remove `keyslot`, never the volume's last one (that would lock everyone out for good)."""
        slots = self.keyslots()
        if keyslot not in slots:
            return
        if slots == [keyslot]:
            raise TargetError(
                f"{self.path}: keyslot {keyslot} is the volume's last keyslot; refusing to remove it "
                "(add another passphrase first with 'cryptsetup luksAddKey')."
            )
        self._run(["luksKillSlot", "--batch-mode", self.path, str(keyslot)], what="remove a keyslot from")

    # -- tokens --

    def import_token(self, token: dict[str, Any]) -> int:
        """Write a token; returns its id."""
        before = set(self.raw_tokens())
        self._run(
            ["token", "import", "--json-file", "-", self.path],
            what="write a token to",
            stdin=json.dumps(token).encode(),
        )
        added = set(self.raw_tokens()) - before
        if len(added) != 1:
            raise TargetError(f"{self.path}: could not tell which token cryptsetup added.")
        return added.pop()

    def remove_token(self, token_id: int) -> None:
        self._run(["token", "remove", "--token-id", str(token_id), self.path], what="remove a token from")

    # -- opening --

    def open(self, name: str, passphrase: bytes, keyslot: int | None = None) -> None:
        """Map the volume as /dev/mapper/NAME; needs device-mapper, which is checked first for a clear message."""
        require_device_mapper()
        argv = ["open", "--type", "luks2", "--key-file=-", self.path, name]
        if keyslot is not None:
            argv[1:1] = ["--key-slot", str(keyslot)]
        proc = self._call(argv, stdin=passphrase)
        if proc.returncode == 2:
            raise TargetError(f"{self.path}: the derived passphrase does not open the volume.")
        if proc.returncode != 0:
            raise self._failure(proc, "open")

    # -- cryptsetup --

    def _call(
        self, argv: Sequence[str], stdin: bytes = b"", pass_fds: tuple[int, ...] = ()
    ) -> subprocess.CompletedProcess[bytes]:
        exe = shutil.which(CRYPTSETUP)
        if exe is None:
            raise TargetError("cryptsetup is not installed (Debian: apt install cryptsetup-bin).")
        try:
            return subprocess.run(
                [exe, *argv],
                input=stdin,
                capture_output=True,
                pass_fds=pass_fds,
                timeout=_TIMEOUT,
                env=_cryptsetup_env(),
            )
        except subprocess.TimeoutExpired:
            raise TargetError(f"{self.path}: cryptsetup did not finish in {_TIMEOUT} seconds.") from None

    def _run(self, argv: Sequence[str], what: str, stdin: bytes = b"") -> str:
        proc = self._call(argv, stdin=stdin)
        if proc.returncode != 0:
            raise self._failure(proc, what)
        return proc.stdout.decode(errors="replace")

    def _failure(self, proc: subprocess.CompletedProcess[bytes], what: str) -> TargetError:
        # cryptsetup's stderr names devices and errors, never key material (it never echoes what it read).
        detail = " ".join(proc.stderr.decode(errors="replace").split())[:300] or f"exit status {proc.returncode}"
        return TargetError(f"Could not {what} {self.path}: {detail}")


LUKS_MAGIC = b"LUKS\xba\xbe"  # the first 6 bytes of a LUKS1 or LUKS2 header; a big-endian version follows


def _cryptsetup_env() -> dict[str, str]:
    # A stable locale so messages are predictable; nothing secret is ever put here.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    env["LC_ALL"] = "C"
    return env


def device_mapper_available() -> bool:
    """Whether the kernel has device-mapper. The /dev/mapper/control node alone proves nothing: libdevmapper
    creates it even where the kernel has no driver behind it, so the node is opened, as cryptsetup would."""
    try:
        with open("/proc/misc") as f:
            if any(line.split()[1:] == ["device-mapper"] for line in f):
                return True
    except OSError:
        pass
    try:
        os.close(os.open("/dev/mapper/control", os.O_RDWR | os.O_CLOEXEC))  # may autoload dm-mod
    except PermissionError:
        return True  # cannot tell without root; cryptsetup will say
    except OSError:
        return False  # ENOENT, ENODEV, ENXIO: no driver
    return True


def require_device_mapper() -> None:
    if not device_mapper_available():
        raise TargetError(
            "Cannot open the volume: device-mapper is missing on this machine (no "
            "/dev/mapper/control). 'hmacunlock luks unlock --test-passphrase' checks the key "
            "without it."
        )


# --- the flows on our token -------------------------------------------------------------------------------------


def enroll(volume: Volume, user: str, unlock_key: bytes, existing: Existing) -> HmacUnlockToken:
    """Add a keyslot whose passphrase derives from `user`'s unlock key, and record it in our token."""
    if volume.token_for(user) is not None:
        raise TargetError(
            f"{volume.path}: user {user!r} is already enrolled on this volume; "
            f"'hmacunlock luks remove {volume.path} {user}' first to enroll again."
        )
    uuid = volume.uuid()
    passphrase = passphrase_for(unlock_key, uuid)
    slot = volume.add_keyslot(passphrase, existing)
    token = HmacUnlockToken(user=user, keyslot=slot, purpose=purpose_label(uuid))
    try:
        if not volume.test_passphrase(passphrase, slot):  # read back what was written before recording it
            raise TargetError(f"{volume.path}: the new keyslot {slot} does not take its passphrase; removed it.")
        token_id = volume.import_token(token.to_json())
    except TargetError:
        volume.kill_slot(slot)  # no keyslot without the token that explains it
        raise
    return HmacUnlockToken(user=user, keyslot=slot, purpose=token.purpose, token_id=token_id)


def find_token(volume: Volume, user: str | None, tokens: Sequence[HmacUnlockToken] | None = None) -> HmacUnlockToken:
    """Our token for `user`, or the only one when no user is named; among `tokens` when already read."""
    tokens = volume.hmacunlock_tokens() if tokens is None else tokens
    if user is not None:
        token = volume.token_for(user, tokens)
        if token is None:
            raise TargetError(
                f"{volume.path}: user {user!r} is not enrolled on this volume "
                f"('hmacunlock luks enroll {volume.path} {user}')."
            )
        return token
    if not tokens:
        raise TargetError(
            f"{volume.path}: no hmacunlock token on this volume ('hmacunlock luks enroll {volume.path} USER')."
        )
    if len(tokens) > 1:
        raise TargetError(
            f"{volume.path}: several users are enrolled on this volume "
            f"({', '.join(t.user for t in tokens)}): name the user."
        )
    return tokens[0]


def volume_passphrase(volume: Volume, token: HmacUnlockToken, unlock_key: bytes) -> bytes:
    """The passphrase of `token`'s keyslot: always bound to the volume's own UUID, whatever the token says."""
    uuid = volume.uuid()
    label = purpose_label(uuid)
    if token.purpose != label:
        raise TargetError(
            f"{volume.path}: token {token.token_id} names purpose {token.purpose!r}, not this "
            f"volume's {label!r}; refusing to use it."
        )
    return passphrase_for(unlock_key, uuid)


def check_or_open(volume: Volume, keyslot: int, passphrase: bytes, name: str | None) -> None:
    """Check (`name` None: --test-passphrase) or open the volume with `keyslot`."""
    if name is None:
        if not volume.test_passphrase(passphrase, keyslot):
            raise TargetError(f"{volume.path}: the derived passphrase does not open keyslot {keyslot}.")
        return
    volume.open(name, passphrase, keyslot)


def remove(volume: Volume, user: str) -> HmacUnlockToken:
    """Remove `user`'s keyslot, then its token; never the volume's last keyslot."""
    token = find_token(volume, user)
    volume.kill_slot(token.keyslot)
    assert token.token_id is not None  # noqa: S101 - narrows: a token read from the volume has its id
    volume.remove_token(token.token_id)
    return token
