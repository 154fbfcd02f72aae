"""LUKS2 target on a real LUKS2 header in a file, through the real cryptsetup (no device-mapper needed).

The unlock key here is a random 32 bytes: this file tests the target layer and the CLI with `--key-file`; the
security-key end of it (PIN, software key) is in test_luks_softkey.py.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import subprocess
import sys

import pytest

from libhmacunlock.errors import ExitCode, TargetError
from libhmacunlock.keys import derive
from libhmacunlock.targets import luks
from tests.fixtures.luks import FIRST_PASSPHRASE, cryptsetup_accepts, dump
from tests.fixtures.system import require_tool

# --- the volume wrapper ---------------------------------------------------------------------------------------


def test_add_keyslot_takes_the_new_key_from_a_pipe_byte_for_byte(volume):
    new = secrets.token_bytes(40) + b"\n\x00 tail"  # binary, with a newline and a NUL: nothing may be trimmed
    slot = volume.add_keyslot(new, luks.Existing(passphrase=FIRST_PASSPHRASE))
    assert slot == 1 and volume.keyslots() == [0, 1]
    assert cryptsetup_accepts(volume, new, keyslot=1)
    assert not cryptsetup_accepts(volume, new[:-5], keyslot=1)
    assert volume.test_passphrase(new, 1) and volume.test_passphrase(new)
    assert not volume.test_passphrase(b"wrong")


def test_add_keyslot_uses_the_minimal_pbkdf_like_systemd(volume):
    slot = volume.add_keyslot(b"x" * 44, luks.Existing(passphrase=FIRST_PASSPHRASE))
    kdf = dump(volume)["keyslots"][str(slot)]["kdf"]
    assert kdf["type"] == "pbkdf2" and kdf["iterations"] == 1000 and kdf["hash"] == "sha512"


def test_add_keyslot_with_a_wrong_existing_passphrase_adds_nothing(volume):
    with pytest.raises(TargetError, match="does not open the volume"):
        volume.add_keyslot(b"new", luks.Existing(passphrase=b"not it"))
    assert volume.keyslots() == [0]


def test_add_keyslot_authorised_by_a_key_file(volume, tmp_path):
    keyfile = tmp_path / "vol.key"
    keyfile.write_bytes(secrets.token_bytes(64))
    os.chmod(keyfile, 0o600)
    volume.add_keyslot(keyfile.read_bytes(), luks.Existing(passphrase=FIRST_PASSPHRASE))
    slot = volume.add_keyslot(b"via key file", luks.Existing(key_file=str(keyfile)))
    assert cryptsetup_accepts(volume, b"via key file", keyslot=slot)


def test_key_material_never_reaches_argv_or_environment(volume, tmp_path, monkeypatch):
    """A recording shim in front of the real cryptsetup logs each call's argv and environment."""
    real = subprocess.run(["sh", "-c", "command -v cryptsetup"], capture_output=True, text=True).stdout.strip()
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    log = tmp_path / "calls.log"
    shim = shim_dir / "cryptsetup"
    shim.write_text(f'#!/bin/sh\n{{ printf \'%s\\0\' "$@"; env; echo; }} >> {log}\nexec {real} "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim_dir}:{os.environ['PATH']}")
    uk = secrets.token_bytes(32)
    token = luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    passphrase = luks.volume_passphrase(volume, token, uk)
    luks.check_or_open(volume, token.keyslot, passphrase, None)
    logged = log.read_bytes()
    assert b"luksAddKey" in logged and b"--test-passphrase" in logged  # the shim saw the calls
    for secret in (passphrase, FIRST_PASSPHRASE, base64.b64encode(uk), uk.hex().encode()):
        assert secret not in logged


def test_not_a_luks_volume_is_a_clear_error(tmp_path):
    require_tool("cryptsetup")
    plain = tmp_path / "plain"
    plain.write_bytes(bytes(4096))
    with pytest.raises(TargetError, match="is not a LUKS volume"):
        luks.Volume(str(plain)).metadata()


def test_open_names_missing_device_mapper(volume):
    if luks.device_mapper_available():
        pytest.skip("this machine has device-mapper: the refusal cannot be shown")
    with pytest.raises(TargetError, match="device-mapper is missing"):
        volume.open("hmacunlock-test", FIRST_PASSPHRASE)


# --- enrollment on our token ----------------------------------------------------------------------------------


def test_enroll_adds_a_slot_the_derived_passphrase_opens(volume):
    uk = secrets.token_bytes(32)
    token = luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    uuid = volume.uuid()
    expected = base64.b64encode(derive(uk, f"luks:{uuid}"))
    assert luks.passphrase_for(uk, uuid) == expected and len(expected) == 44 and b"\n" not in expected
    assert cryptsetup_accepts(volume, expected, keyslot=token.keyslot)
    other = luks.passphrase_for(secrets.token_bytes(32), uuid)
    assert not cryptsetup_accepts(volume, other)
    assert cryptsetup_accepts(volume, FIRST_PASSPHRASE, keyslot=0)  # the old passphrase still works


def test_token_is_recorded_field_by_field(volume):
    uk = secrets.token_bytes(32)
    token = luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    raw = dump(volume)["tokens"][str(token.token_id)]
    assert raw == {
        "type": "hmacunlock",
        "keyslots": [str(token.keyslot)],
        "hmacunlock-version": 1,
        "hmacunlock-user": "alice",
        "hmacunlock-purpose": f"luks:{volume.uuid()}",
        "hmacunlock-encoding": "base64",
    }
    assert volume.token_for("alice") == token and volume.token_for("bob") is None


def test_two_users_get_two_slots_with_different_passphrases(volume):
    alice, bob = secrets.token_bytes(32), secrets.token_bytes(32)
    ta = luks.enroll(volume, "alice", alice, luks.Existing(passphrase=FIRST_PASSPHRASE))
    tb = luks.enroll(volume, "bob", bob, luks.Existing(passphrase=FIRST_PASSPHRASE))
    assert ta.keyslot != tb.keyslot
    assert volume.test_passphrase(luks.volume_passphrase(volume, tb, bob), tb.keyslot)
    assert not volume.test_passphrase(luks.volume_passphrase(volume, ta, alice), tb.keyslot)
    with pytest.raises(TargetError, match="several users"):
        luks.find_token(volume, None)


def test_enrolling_the_same_user_twice_is_refused(volume):
    uk = secrets.token_bytes(32)
    luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    with pytest.raises(TargetError, match="already enrolled"):
        luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    assert volume.keyslots() == [0, 1]


def test_passphrase_is_bound_to_the_volume_uuid_not_the_token(volume):
    """A token claiming another volume's purpose label is refused, not followed."""
    uk = secrets.token_bytes(32)
    slot = volume.add_keyslot(b"whatever", luks.Existing(passphrase=FIRST_PASSPHRASE))
    forged = luks.HmacUnlockToken(user="mallory", keyslot=slot, purpose="luks:00000000-0000-0000-0000-000000000000")
    volume.import_token(forged.to_json())
    token = luks.find_token(volume, "mallory")
    with pytest.raises(TargetError, match="refusing"):
        luks.volume_passphrase(volume, token, uk)


def test_a_wrong_unlock_key_does_not_open(volume):
    token = luks.enroll(volume, "alice", secrets.token_bytes(32), luks.Existing(passphrase=FIRST_PASSPHRASE))
    wrong = luks.volume_passphrase(volume, token, secrets.token_bytes(32))
    with pytest.raises(TargetError, match="does not open keyslot"):
        luks.check_or_open(volume, token.keyslot, wrong, None)


def test_remove_takes_the_slot_and_token_and_keeps_the_rest(volume):
    uk = secrets.token_bytes(32)
    token = luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    luks.remove(volume, "alice")
    meta = dump(volume)
    assert list(meta["keyslots"]) == ["0"] and meta["tokens"] == {}
    assert not cryptsetup_accepts(volume, luks.passphrase_for(uk, volume.uuid()))
    assert cryptsetup_accepts(volume, FIRST_PASSPHRASE)
    with pytest.raises(TargetError, match="not enrolled"):
        luks.remove(volume, "alice")
    assert token.keyslot == 1


def test_remove_never_removes_the_last_keyslot(volume):
    uk = secrets.token_bytes(32)
    token = luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    subprocess.run(["cryptsetup", "luksKillSlot", "--batch-mode", volume.path, "0"], check=True, capture_output=True)
    with pytest.raises(TargetError, match="last keyslot"):
        luks.remove(volume, "alice")
    meta = dump(volume)
    assert list(meta["keyslots"]) == [str(token.keyslot)] and str(token.token_id) in meta["tokens"]
    assert cryptsetup_accepts(volume, luks.passphrase_for(uk, volume.uuid()))


def test_a_malformed_token_of_our_type_is_reported(volume):
    volume.import_token({"type": "hmacunlock", "keyslots": ["0"], "hmacunlock-version": 99})
    with pytest.raises(TargetError, match="malformed"):
        volume.hmacunlock_tokens()


# --- the CLI with --key-file (the unlock key on stdin, as `recovery unlock --key-file -` prints it) -------------


def hmacunlock(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hmacunlock_cli", *argv], input=stdin, capture_output=True, timeout=120
    )


def test_cli_enroll_unlock_remove_with_the_unlock_key_on_stdin(volume):
    uk = secrets.token_bytes(32)
    ran = hmacunlock("luks", "enroll", volume.path, "alice", "--key-file", "-", stdin=uk + FIRST_PASSPHRASE + b"\n")
    assert ran.returncode == 0, ran.stderr
    assert cryptsetup_accepts(volume, luks.passphrase_for(uk, volume.uuid()))
    ran = hmacunlock("luks", "unlock", volume.path, "alice", "--key-file", "-", "--test-passphrase", stdin=uk)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == b""  # nothing secret on stdout
    ran = hmacunlock(
        "luks", "unlock", volume.path, "--key-file", "-", "--test-passphrase", stdin=secrets.token_bytes(32)
    )
    assert ran.returncode == ExitCode.TARGET and b"does not open" in ran.stderr
    ran = hmacunlock("luks", "remove", volume.path, "alice", "--yes")
    assert ran.returncode == 0, ran.stderr
    assert list(dump(volume)["keyslots"]) == ["0"]


def test_cli_keyscript_prints_exactly_the_passphrase(volume):
    uk = secrets.token_bytes(32)
    token = luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    ran = hmacunlock("luks", "keyscript", volume.path, "alice", "--key-file", "-", stdin=uk)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == luks.passphrase_for(uk, volume.uuid())  # no newline: cryptsetup reads all of it
    assert cryptsetup_accepts(volume, ran.stdout, keyslot=token.keyslot)


def test_cli_keyscript_refuses_a_terminal(volume):
    # the passphrase goes to cryptsetup on a pipe, never onto a screen
    import os
    import pty

    uk = secrets.token_bytes(32)
    luks.enroll(volume, "alice", uk, luks.Existing(passphrase=FIRST_PASSPHRASE))
    leader, follower = pty.openpty()
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "hmacunlock_cli", "luks", "keyscript", volume.path, "alice", "--key-file", "-"],
            input=uk,
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=120,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert ran.returncode == ExitCode.USAGE and b"terminal" in ran.stderr
    assert luks.passphrase_for(uk, volume.uuid()) not in shown


def test_cli_enroll_with_a_wrong_volume_passphrase_changes_nothing(volume):
    ran = hmacunlock(
        "luks", "enroll", volume.path, "alice", "--key-file", "-", stdin=secrets.token_bytes(32) + b"wrong\n"
    )
    assert ran.returncode == ExitCode.TARGET and b"does not open the volume" in ran.stderr
    meta = dump(volume)
    assert list(meta["keyslots"]) == ["0"] and meta["tokens"] == {}


def test_cli_unlock_key_file_must_be_32_bytes_and_private(volume, tmp_path):
    luks.enroll(volume, "alice", secrets.token_bytes(32), luks.Existing(passphrase=FIRST_PASSPHRASE))
    ran = hmacunlock(
        "luks", "unlock", volume.path, "alice", "--key-file", "-", "--test-passphrase", stdin=secrets.token_bytes(33)
    )
    assert ran.returncode == ExitCode.USAGE and b"exactly 32" in ran.stderr
    keyfile = tmp_path / "uk"
    keyfile.write_bytes(secrets.token_bytes(32))
    os.chmod(keyfile, 0o644)
    ran = hmacunlock("luks", "unlock", volume.path, "alice", "--key-file", str(keyfile), "--test-passphrase")
    assert ran.returncode == ExitCode.USAGE and b"0600" in ran.stderr
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o644


def test_cli_unlock_with_name_says_device_mapper_is_missing_before_asking(volume):
    if luks.device_mapper_available():
        pytest.skip("this machine has device-mapper: the refusal cannot be shown")
    luks.enroll(volume, "alice", secrets.token_bytes(32), luks.Existing(passphrase=FIRST_PASSPHRASE))
    ran = hmacunlock("luks", "unlock", volume.path, "alice", "--name", "data", "--device", "udp:127.0.0.1:9")
    assert ran.returncode == ExitCode.TARGET and b"device-mapper is missing" in ran.stderr


def test_cli_unlock_of_a_user_not_enrolled_on_the_volume(volume):
    ran = hmacunlock(
        "luks", "unlock", volume.path, "bob", "--key-file", "-", "--test-passphrase", stdin=secrets.token_bytes(32)
    )
    assert ran.returncode == ExitCode.TARGET and b"not enrolled on this volume" in ran.stderr
