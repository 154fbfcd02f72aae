"""LUKS enrollment that cannot orphan (issue 17, F3), on a real LUKS2 header through the real cryptsetup.

`hmacunlock luks enroll` is killed (SIGKILL) at every cryptsetup call it makes, before and after the call: a
wrapper named `cryptsetup` first on PATH counts the calls and kills its parent at the chosen one. After every kill,
no keyslot that the user's derived passphrase opens is left without a token that names it; the next enroll works;
and after `luks remove` no keyslot opens with that passphrase. Two enrolls at the same moment serialise on the
volume's lock. A keyslot an older version orphaned is found by `luks remove --key-file` (the sweep).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from libhmacunlock.targets import luks
from tests.fixtures.luks import FIRST_PASSPHRASE, cryptsetup_accepts, dump, make_volume
from tests.fixtures.system import require_tool

USER = "alice"


def hmacunlock(*argv: str, path_prefix: Path | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(
        [sys.executable, "-m", "hmacunlock_cli", *argv],
        input=stdin,
        capture_output=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.fixture
def setup(tmp_path):
    """(volume, unlock key file, volume key file, the user's derived passphrase)."""
    require_tool("cryptsetup")
    volume = make_volume(tmp_path / "vol.luks")
    uk = secrets.token_bytes(32)
    uk_file = tmp_path / "uk"
    uk_file.write_bytes(uk)
    os.chmod(uk_file, 0o600)
    volume_key = tmp_path / "vol.key"
    volume_key.write_bytes(FIRST_PASSPHRASE)
    os.chmod(volume_key, 0o600)
    return volume, uk_file, volume_key, luks.passphrase_for(uk, volume.uuid())


def killing_wrapper(directory: Path, call: int, when: str) -> Path:
    """A `cryptsetup` that SIGKILLs its caller at call number `call`, before or after running the real one."""
    real = shutil.which("cryptsetup")
    directory.mkdir(exist_ok=True)
    counter = directory / "count"
    counter.write_text("0")
    wrapper = directory / "cryptsetup"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"n=$(( $(cat {counter}) + 1 )); echo $n > {counter}\n"
        f"if [ $n -eq {call} ] && [ {when} = before ]; then kill -9 $PPID; exit 1; fi\n"
        f'{real} "$@"; rc=$?\n'
        f"if [ $n -eq {call} ] && [ {when} = after ]; then kill -9 $PPID; fi\n"
        "exit $rc\n"
    )
    wrapper.chmod(0o755)
    return counter


def keyslots_opened_by(volume: luks.Volume, passphrase: bytes) -> set[int]:
    return {int(k) for k in dump(volume)["keyslots"] if cryptsetup_accepts(volume, passphrase, keyslot=int(k))}


def keyslots_named_for(volume: luks.Volume, user: str) -> set[int]:
    """Keyslots our token of `user` names, or a pending token of `user` names."""
    named = set()
    for t in dump(volume)["tokens"].values():
        if t["type"] == luks.TOKEN_TYPE and t.get("hmacunlock-user") == user:
            named |= {int(s) for s in t["keyslots"]}
        if t["type"] == luks.PENDING_TYPE and t.get("hmacunlock-for") == f"user {user}":
            named.add(int(t["hmacunlock-keyslot"]))
    return named


def enroll_args(volume: luks.Volume, uk_file: Path, volume_key: Path, user: str = USER) -> list[str]:
    return ["luks", "enroll", volume.path, user, "--key-file", str(uk_file), "--volume-key-file", str(volume_key)]


def test_enroll_killed_at_every_cryptsetup_call_never_orphans_a_keyslot(setup, tmp_path):
    volume, uk_file, volume_key, passphrase = setup
    image = Path(volume.path).read_bytes()  # the pristine header, restored before each round
    rounds = 0
    for call in range(1, 60):
        for when in ("before", "after"):
            Path(volume.path).write_bytes(image)
            counter = killing_wrapper(tmp_path / "bin", call, when)
            ran = hmacunlock(*enroll_args(volume, uk_file, volume_key), path_prefix=tmp_path / "bin")
            calls = int(counter.read_text())
            if calls < call:  # finished before the chosen call: every step has been covered
                assert ran.returncode == 0, ran.stderr
                assert rounds > 10  # the enroll makes a dozen cryptsetup calls or more
                return
            rounds += 1
            assert ran.returncode == -9, (call, when, ran.stderr)
            # the invariant: every keyslot the user's passphrase opens is named by one of the user's tokens
            opened = keyslots_opened_by(volume, passphrase)
            assert opened <= keyslots_named_for(volume, USER), (call, when, dump(volume)["tokens"])
            # enrolling again works (or says the user is enrolled, when the kill came after the token)
            again = hmacunlock(*enroll_args(volume, uk_file, volume_key))
            assert again.returncode == 0 or b"already enrolled" in again.stderr, (call, when, again.stderr)
            status = hmacunlock("luks", "status", volume.path, "--json")
            assert status.returncode == 0, status.stderr
            assert not [k for k in json.loads(status.stdout)["keyslots"] if k["interrupted"]]
            removed = hmacunlock("luks", "remove", volume.path, USER, "--yes")
            assert removed.returncode == 0, removed.stderr
            assert b"Removed 1 keyslot" in removed.stderr
            assert keyslots_opened_by(volume, passphrase) == set()
            assert cryptsetup_accepts(volume, FIRST_PASSPHRASE, keyslot=0)
    pytest.fail("luks enroll never finished")


def test_remove_after_a_kill_removes_the_interrupted_keyslot_and_status_shows_it(setup, tmp_path):
    volume, uk_file, volume_key, passphrase = setup
    # kill right after luksAddKey: find its call number with a dry run that counts
    killing_wrapper(tmp_path / "bin", 10_000, "after")
    log = tmp_path / "bin" / "count"
    ok = hmacunlock(*enroll_args(volume, uk_file, volume_key), path_prefix=tmp_path / "bin")
    assert ok.returncode == 0, ok.stderr
    hmacunlock("luks", "remove", volume.path, USER, "--yes")
    total = int(log.read_text())
    for call in range(1, total + 1):
        counter = killing_wrapper(tmp_path / "bin", call, "after")
        ran = hmacunlock(*enroll_args(volume, uk_file, volume_key), path_prefix=tmp_path / "bin")
        assert ran.returncode == -9 and int(counter.read_text()) == call
        if keyslots_opened_by(volume, passphrase):
            break  # the keyslot is there; its token is not
        hmacunlock("luks", "remove", volume.path, USER, "--yes")
    else:
        pytest.fail("no kill point after luksAddKey")
    status = hmacunlock("luks", "status", volume.path)
    assert b"left by an interrupted enroll" in status.stdout, status.stdout
    removed = hmacunlock("luks", "remove", volume.path, USER, "--yes")  # without the unlock key: the pending token says
    assert removed.returncode == 0, removed.stderr
    assert keyslots_opened_by(volume, passphrase) == set()
    assert list(dump(volume)["keyslots"]) == ["0"] and dump(volume)["tokens"] == {}


def test_two_concurrent_enrolls_each_get_their_own_named_keyslot(setup, tmp_path):
    volume, uk_file, volume_key, _ = setup
    other = tmp_path / "uk-bob"
    other.write_bytes(secrets.token_bytes(32))
    os.chmod(other, 0o600)
    passphrases = {USER: luks.passphrase_for(uk_file.read_bytes(), volume.uuid())}
    passphrases["bob"] = luks.passphrase_for(other.read_bytes(), volume.uuid())
    image = Path(volume.path).read_bytes()
    for _ in range(5):
        Path(volume.path).write_bytes(image)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "hmacunlock_cli", *enroll_args(volume, key, volume_key, user)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for user, key in ((USER, uk_file), ("bob", other))
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        for user, passphrase in passphrases.items():
            opened = keyslots_opened_by(volume, passphrase)
            assert len(opened) == 1 and opened == keyslots_named_for(volume, user), dump(volume)
        assert sorted(int(k) for k in dump(volume)["keyslots"]) == [0, 1, 2]
        for user, passphrase in passphrases.items():
            assert hmacunlock("luks", "remove", volume.path, user, "--yes").returncode == 0
            assert keyslots_opened_by(volume, passphrase) == set()


def test_remove_with_the_unlock_key_sweeps_an_orphan_of_an_older_version(setup):
    volume, uk_file, volume_key, passphrase = setup
    orphan = volume.add_keyslot(passphrase, luks.Existing(passphrase=FIRST_PASSPHRASE))  # what the old code left
    assert hmacunlock(*enroll_args(volume, uk_file, volume_key)).returncode == 0
    status = hmacunlock("luks", "status", volume.path)
    assert f"keyslot {orphan}: no token".encode() in status.stdout
    ran = hmacunlock("luks", "remove", volume.path, USER, "--key-file", str(uk_file), "--yes")
    assert ran.returncode == 0, ran.stderr
    assert b"Removed 2 keyslots" in ran.stderr and b"every keyslot was tried" in ran.stderr
    assert keyslots_opened_by(volume, passphrase) == set()
    assert list(dump(volume)["keyslots"]) == ["0"]
