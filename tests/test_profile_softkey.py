"""End to end: `hmacunlock profile` with the software key and its PIN, on a loop-mounted ext4 with -O encrypt."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from libhmacunlock.errors import ExitCode
from libhmacunlock.keys import derive
from libhmacunlock.targets import fscrypt
from tests.fixtures.fscrypt import NOTE, loop_ext4
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey


class Env:
    def __init__(self, spec: str, store: Path, home: Path) -> None:
        self.spec, self.store, self.home = spec, store, home

    def run(self, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hmacunlock_cli", *argv, "--device", self.spec, "--store", str(self.store)],
            input=stdin,
            capture_output=True,
            timeout=120,
        )


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:
    from libhmacunlock.softkey.udp import running_udp_softkey

    with loop_ext4(tmp_path) as mnt:
        state = tmp_path / "softkey.json"
        make_pinned_softkey(state)
        store = tmp_path / "store"
        store.mkdir(mode=0o700)
        home = mnt / "alice"
        home.mkdir()
        with running_udp_softkey(state) as server:
            yield Env(server.spec, store, home)


PIN = TEST_PIN.encode() + b"\n"


def test_setup_lock_unlock_with_the_pin(env):
    assert env.run("enroll", "alice", stdin=PIN).returncode == 0
    ran = env.run("profile", "setup", "alice", str(env.home), stdin=PIN)
    assert ran.returncode == 0, ran.stderr
    (env.home / "notes.txt").write_bytes(NOTE)

    # The directory's key is derive(UK, "fscrypt:v2") of alice's unlock key, as the library gives it.
    uk = env.run("unlock", "alice", "--key-file", "-", stdin=PIN).stdout
    policy = fscrypt.get_policy(str(env.home))
    assert policy.identifier == fscrypt.key_identifier(derive(uk, "fscrypt:v2", 64))

    assert fscrypt.lock_profile(str(env.home)) is fscrypt.Status.LOCKED
    assert "notes.txt" not in os.listdir(env.home)
    ran = env.run("profile", "unlock", "alice", str(env.home), stdin=b"135790\n")
    assert ran.returncode == ExitCode.WRONG_PIN
    assert fscrypt.profile_status(str(env.home)) is fscrypt.Status.LOCKED

    ran = env.run("profile", "unlock", "alice", str(env.home), stdin=PIN)
    assert ran.returncode == 0, ran.stderr
    assert (env.home / "notes.txt").read_bytes() == NOTE


def test_another_users_key_is_refused(env):
    assert env.run("enroll", "alice", stdin=PIN).returncode == 0
    assert env.run("enroll", "bob", stdin=PIN).returncode == 0
    assert env.run("profile", "setup", "alice", str(env.home), stdin=PIN).returncode == 0
    fscrypt.lock_profile(str(env.home))
    ran = env.run("profile", "unlock", "bob", str(env.home), stdin=PIN)
    assert ran.returncode == ExitCode.TARGET and b"another key" in ran.stderr
    assert fscrypt.profile_status(str(env.home)) is fscrypt.Status.LOCKED


def test_setup_records_the_directory_and_forget_takes_it_out(env):
    from libhmacunlock.store import Store

    assert env.run("enroll", "alice", stdin=PIN).returncode == 0
    ran = env.run("profile", "setup", "alice", str(env.home), stdin=PIN)
    assert ran.returncode == 0, ran.stderr
    assert Store(env.store).read("alice").profiles() == (str(env.home),)  # what PAM's bare `profile` unlocks

    forget = [sys.executable, "-m", "hmacunlock_cli", "profile", "forget", "alice", str(env.home), "--store"]
    ran = subprocess.run([*forget, str(env.store)], capture_output=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert Store(env.store).read("alice").profiles() == ()
    assert fscrypt.profile_status(str(env.home)) is fscrypt.Status.UNLOCKED  # still encrypted, still open
    ran = subprocess.run([*forget, str(env.store)], capture_output=True, timeout=120)
    assert ran.returncode == ExitCode.USAGE and b"names no profile" in ran.stderr


def test_a_key_file_that_is_not_the_users_is_refused_before_the_directory_is_touched(env, tmp_path):
    """`profile setup alice DIR --key-file F` with F not alice's unlock key (an older enrollment's, another user's):
    alice's sign-in could never unlock DIR, so it is refused and DIR stays as it was; alice's own key file sets it
    up and notes it; a user with no record gets it set up and is told it is not noted anywhere."""
    from libhmacunlock.store import Store

    assert env.run("enroll", "alice", stdin=PIN).returncode == 0
    assert env.run("enroll", "bob", stdin=PIN).returncode == 0
    bobs = tmp_path / "bob.key"
    assert env.run("unlock", "bob", "--key-file", str(bobs), stdin=PIN).returncode == 0
    ran = env.run("profile", "setup", "alice", str(env.home), "--key-file", str(bobs))
    assert ran.returncode == ExitCode.USAGE, ran.stderr
    assert b"is not alice's" in ran.stderr and b"Nothing was changed" in ran.stderr
    assert fscrypt.profile_status(str(env.home)) is fscrypt.Status.NOT_ENCRYPTED
    assert Store(env.store).read("alice").profiles() == ()

    alices = tmp_path / "alice.key"
    assert env.run("unlock", "alice", "--key-file", str(alices), stdin=PIN).returncode == 0
    ran = env.run("profile", "setup", "alice", str(env.home), "--key-file", str(alices))
    assert ran.returncode == 0 and b"not noted" not in ran.stdout + ran.stderr, ran.stderr
    assert Store(env.store).read("alice").profiles() == (str(env.home),)

    carol = env.home.parent / "carol"
    carol.mkdir()
    ran = env.run("profile", "setup", "carol", str(carol), "--key-file", str(alices))
    assert ran.returncode == 0, ran.stderr
    said = (ran.stdout + ran.stderr).decode()
    assert f"{carol} is not noted in a record: carol has no record here" in said, said
    assert fscrypt.profile_status(str(carol)) is fscrypt.Status.UNLOCKED
