"""The `cryptsetup` command (Debian cryptsetup-bin 2.6) on one LUKS2 volume: the only code that runs it.

Everything goes through the command, never libcryptsetup bindings, so the volume is changed exactly as an
administrator would change it. Key material reaches cryptsetup on stdin (`--key-file=-`) or on an inherited pipe
named `/dev/fd/N`; never in argv, the environment or a temporary file. This module knows keyslots and tokens as
cryptsetup does (numbers and JSON); what our tokens mean is luks_tokens.py, the flows are luks.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import TargetError

CRYPTSETUP = "cryptsetup"
LUKS2_KEYSLOTS = 32  # keyslots 0..31
# Our passphrases are 256-bit random: a slow PBKDF adds nothing but seconds at boot, so like systemd-cryptenroll
# (cryptsetup_set_minimal_pbkdf) the keyslots we add use PBKDF2 at its minimum.
MINIMAL_PBKDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--hash", "sha512")
_TIMEOUT = 120


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

    def keyslots(self, metadata: dict[str, Any] | None = None) -> list[int]:
        meta = self.metadata() if metadata is None else metadata
        return sorted(int(k) for k in meta.get("keyslots", {}))

    def raw_tokens(self, metadata: dict[str, Any] | None = None) -> dict[int, dict[str, Any]]:
        meta = self.metadata() if metadata is None else metadata
        return {int(k): v for k, v in meta.get("tokens", {}).items()}

    # -- the volume's lock --

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this volume's lock (by its UUID, so two paths to one volume share it) across a read-decide-change
        of its keyslots and tokens; hmacunlock's own changes to one volume never interleave (issue 17, F3)."""
        from ..locks import held

        with held("luks", self.uuid()):
            yield

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

    def add_keyslot(self, new_passphrase: bytes, existing: Existing, keyslot: int | None = None) -> int:
        """Add a keyslot for `new_passphrase`, authorised by `existing`, as number `keyslot` (chosen by the caller,
        so a token can name it first) or else cryptsetup's choice, found by comparing the keyslots before and
        after (only safe under `locked()`); returns the new slot's number."""
        if len(new_passphrase) > 4096:  # written before cryptsetup starts: it must fit in the pipe's buffer
            raise ValueError("a keyslot passphrase is at most 4096 bytes")
        before = set(self.keyslots()) if keyslot is None else set()
        read_fd, write_fd = os.pipe()
        try:
            # The new key on a pipe that cryptsetup opens as /dev/fd/N; it is small, so the write cannot block.
            os.write(write_fd, new_passphrase)
            os.close(write_fd)
            write_fd = -1
            existing_arg = "--key-file=-" if existing.passphrase is not None else f"--key-file={existing.key_file}"
            argv = ["luksAddKey", "--batch-mode", *MINIMAL_PBKDF, existing_arg, self.path, f"/dev/fd/{read_fd}"]
            if keyslot is not None:
                argv[2:2] = ["--key-slot", str(keyslot)]
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
        if keyslot is not None:
            return keyslot
        added = set(self.keyslots()) - before
        if len(added) != 1:
            raise TargetError(f"{self.path}: could not tell which keyslot cryptsetup added.")
        return added.pop()

    def kill_slot(self, keyslot: int, metadata: dict[str, Any] | None = None) -> bool:
        """Remove `keyslot`, never the volume's last one (that would lock everyone out for good); False when
        there was no such keyslot."""
        slots = self.keyslots(metadata)
        if keyslot not in slots:
            return False
        if slots == [keyslot]:
            raise TargetError(
                f"{self.path}: keyslot {keyslot} is the volume's last keyslot; refusing to remove it "
                "(add another passphrase first with 'cryptsetup luksAddKey')."
            )
        self._run(["luksKillSlot", "--batch-mode", self.path, str(keyslot)], what="remove a keyslot from")
        return True

    # -- tokens --

    def import_token(self, token: dict[str, Any], token_id: int | None = None) -> int:
        """Write a token (as `token_id`, replacing any token there, or cryptsetup's choice); returns its id."""
        argv = ["token", "import", "--json-file", "-", self.path]
        if token_id is not None:
            argv[2:2] = ["--token-id", str(token_id), "--token-replace"]
            self._run(argv, what="write a token to", stdin=json.dumps(token).encode())
            return token_id
        before = set(self.raw_tokens())
        self._run(argv, what="write a token to", stdin=json.dumps(token).encode())
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
