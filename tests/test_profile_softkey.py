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
