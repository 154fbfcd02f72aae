"""fscrypt v2 profile directories on a real loop-mounted ext4 made with -O encrypt (needs root and loop devices).

The unlock key is a random 32 bytes here; the security-key end is in test_profile_softkey.py.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from libhmacunlock.errors import ExitCode, TargetError
from libhmacunlock.targets import fscrypt
from tests.fixtures.fscrypt import NOTE, loop_ext4


@pytest.fixture
def ext4(tmp_path) -> Iterator[Path]:
    with loop_ext4(tmp_path) as mnt:
        yield mnt


@pytest.fixture
def profile(ext4) -> Path:
    d = ext4 / "alice"
    d.mkdir()
    return d


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# --- the ioctl layer ------------------------------------------------------------------------------------------


def test_ioctl_numbers_match_linux_fscrypt_h():
    assert fscrypt.FS_IOC_SET_ENCRYPTION_POLICY == 0x800C6613
    assert fscrypt.FS_IOC_GET_ENCRYPTION_POLICY_EX == 0xC0096616
    assert fscrypt.FS_IOC_ADD_ENCRYPTION_KEY == 0xC0506617
    assert fscrypt.FS_IOC_REMOVE_ENCRYPTION_KEY == 0xC0406618
    assert fscrypt.FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS == 0xC0406619
    assert fscrypt.FS_IOC_GET_ENCRYPTION_KEY_STATUS == 0xC080661A


def test_setup_sets_a_v2_policy_under_the_users_key(profile):
    uk = secrets.token_bytes(32)
    policy = fscrypt.setup_profile(str(profile), uk)
    read = fscrypt.get_policy(str(profile))
    assert read == policy
    assert (read.contents_mode, read.filenames_mode, read.flags) == (1, 4, 0x03)  # AES-256-XTS, AES-256-CTS, pad 32
    # The kernel's identifier (returned by ADD_KEY and checked by setup) is the one we compute from the key.
    assert read.identifier == fscrypt.key_identifier(fscrypt.profile_key(uk))
    assert len(fscrypt.profile_key(uk)) == 64
    assert fscrypt.profile_status(str(profile)) is fscrypt.Status.UNLOCKED


def test_a_file_reads_back_after_lock_and_unlock_and_is_ciphertext_while_locked(profile):
    uk = secrets.token_bytes(32)
    fscrypt.setup_profile(str(profile), uk)
    (profile / "notes.txt").write_bytes(NOTE)

    assert fscrypt.lock_profile(str(profile)) is fscrypt.Status.LOCKED
    assert fscrypt.profile_status(str(profile)) is fscrypt.Status.LOCKED
    locked = names(profile)
    assert len(locked) == 1 and locked[0] != "notes.txt"  # the name is ciphertext
    with pytest.raises(OSError) as exc:
        (profile / locked[0]).read_bytes()
    assert exc.value.errno == errno.ENOKEY
    with pytest.raises(OSError):
        (profile / "new.txt").write_bytes(b"x")  # no new files without the key

    fscrypt.unlock_profile(str(profile), uk)
    assert fscrypt.profile_status(str(profile)) is fscrypt.Status.UNLOCKED
    assert names(profile) == ["notes.txt"]
    assert (profile / "notes.txt").read_bytes() == NOTE


def test_every_profile_of_a_user_shares_one_key(ext4):
    uk = secrets.token_bytes(32)
    a, b = ext4 / "a", ext4 / "b"
    a.mkdir(), b.mkdir()
    assert fscrypt.setup_profile(str(a), uk).identifier == fscrypt.setup_profile(str(b), uk).identifier
    (b / "f").write_bytes(NOTE)
    fscrypt.lock_profile(str(a))  # one key: locking one locks both
    assert fscrypt.profile_status(str(b)) is fscrypt.Status.LOCKED
    assert names(b) != ["f"]


def test_another_users_key_does_not_unlock(profile):
    fscrypt.setup_profile(str(profile), secrets.token_bytes(32))
    (profile / "notes.txt").write_bytes(NOTE)
    fscrypt.lock_profile(str(profile))
    with pytest.raises(TargetError, match="another key"):
        fscrypt.unlock_profile(str(profile), secrets.token_bytes(32))
    assert fscrypt.profile_status(str(profile)) is fscrypt.Status.LOCKED


def test_lock_with_a_file_open_is_partial_until_it_closes(profile):
    fscrypt.setup_profile(str(profile), secrets.token_bytes(32))
    with open(profile / "open.txt", "wb") as f:
        f.write(NOTE)
        assert fscrypt.lock_profile(str(profile)) is fscrypt.Status.PARTIALLY_LOCKED
        assert fscrypt.profile_status(str(profile)) is fscrypt.Status.PARTIALLY_LOCKED
    assert fscrypt.lock_profile(str(profile)) is fscrypt.Status.LOCKED


# --- refusals -------------------------------------------------------------------------------------------------


def test_setup_refuses_a_directory_that_is_not_empty(profile):
    (profile / "existing").write_bytes(b"plain")
    with pytest.raises(TargetError, match="not empty"):
        fscrypt.setup_profile(str(profile), secrets.token_bytes(32))
    assert fscrypt.profile_status(str(profile)) is fscrypt.Status.NOT_ENCRYPTED
    assert (profile / "existing").read_bytes() == b"plain"


def test_setup_refuses_a_directory_already_under_another_policy(profile):
    fscrypt.setup_profile(str(profile), secrets.token_bytes(32))
    before = fscrypt.get_policy(str(profile))
    with pytest.raises(TargetError, match="already encrypted"):
        fscrypt.setup_profile(str(profile), secrets.token_bytes(32))
    assert fscrypt.get_policy(str(profile)) == before


def test_setup_refuses_a_filesystem_without_encryption(tmp_path):
    with loop_ext4(tmp_path, encrypt=False) as mnt:
        d = mnt / "alice"
        d.mkdir()
        with pytest.raises(TargetError, match="tune2fs -O encrypt"):
            fscrypt.setup_profile(str(d), secrets.token_bytes(32))
        assert fscrypt.profile_status(str(d)) is fscrypt.Status.NOT_ENCRYPTED


def test_unlock_and_lock_refuse_a_directory_that_is_not_encrypted(ext4):
    d = ext4 / "plain"
    d.mkdir()
    with pytest.raises(TargetError, match="not encrypted"):
        fscrypt.unlock_profile(str(d), secrets.token_bytes(32))
    with pytest.raises(TargetError, match="not encrypted"):
        fscrypt.lock_profile(str(d))


def test_a_symlink_or_missing_directory_is_refused(ext4):
    target = ext4 / "real"
    target.mkdir()
    (ext4 / "link").symlink_to(target)
    with pytest.raises(TargetError, match="symbolic link"):
        fscrypt.setup_profile(str(ext4 / "link"), secrets.token_bytes(32))
    with pytest.raises(TargetError, match="does not exist"):
        fscrypt.profile_status(str(ext4 / "missing"))


# --- the CLI with --key-file ----------------------------------------------------------------------------------


def hmacunlock(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hmacunlock_cli", *argv], input=stdin, capture_output=True, timeout=120
    )


def status_json(directory: Path) -> str:
    ran = hmacunlock("profile", "status", str(directory), "--json")
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)["status"]


def test_cli_setup_lock_status_unlock(profile):
    uk = secrets.token_bytes(32)
    assert status_json(profile) == "not encrypted"
    ran = hmacunlock("profile", "setup", "alice", str(profile), "--key-file", "-", stdin=uk)
    assert ran.returncode == 0, ran.stderr
    (profile / "notes.txt").write_bytes(NOTE)
    assert hmacunlock("profile", "lock", str(profile)).returncode == 0
    assert status_json(profile) == "locked" and "notes.txt" not in names(profile)
    ran = hmacunlock("profile", "unlock", "alice", str(profile), "--key-file", "-", stdin=secrets.token_bytes(32))
    assert ran.returncode == ExitCode.TARGET and b"another key" in ran.stderr
    ran = hmacunlock("profile", "unlock", "alice", str(profile), "--key-file", "-", stdin=uk)
    assert ran.returncode == 0, ran.stderr
    assert status_json(profile) == "unlocked" and (profile / "notes.txt").read_bytes() == NOTE


def test_cli_setup_refuses_before_asking_for_anything(profile):
    (profile / "existing").write_bytes(b"plain")
    # No key file and an unreachable device: the refusal must come first, from the directory alone.
    ran = hmacunlock("profile", "setup", "alice", str(profile), "--device", "udp:127.0.0.1:9")
    assert ran.returncode == ExitCode.TARGET and b"not empty" in ran.stderr
