"""Profiles per user through real libpam (issue 16): `profile=DIR/%u/private` and `profile` (the record's
directories) unlock the signing-in user's fscrypt profile at authentication; `lock_on_logout` on the session line
locks it when the user's last session closes.

Real pieces only: python-pam in separate processes (tests/pam/session_client.py: each holds its own PAM handle, so
two sessions of one user can be open at once), the module built from this tree, the real helper, the software key
over UDP, fscrypt on a loop-mounted ext4 made with -O encrypt. Needs root and a loop device (skips otherwise).
Users, services and mounts have unique names, and each user's session state in /run/hmacunlock/sessions is removed
afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pam
import pytest

from libhmacunlock import dependents, sessions
from libhmacunlock.enroll import enroll
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.targets import fscrypt
from libhmacunlock.unlock import unlock
from tests.fixtures import syslog
from tests.fixtures.fscrypt import NOTE, loop_ext4
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.system import require_root
from tests.pam.stack import MODULE, REPO, fake_helper, module_line, pam_service, require_module

pytestmark = pytest.mark.root


class Client:
    """One PAM application process (python-pam) for SERVICE and USER, driven a command at a time."""

    def __init__(self, service: str, user: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.pam.session_client", service, user],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _do(self, command: str) -> tuple[int, list[str]]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, f"the PAM client died during {command.split()[0]!r}"
        name, code, messages = reply.rstrip("\n").split(" ", 2)
        assert name == command.split()[0]
        return int(code), json.loads(messages)

    def _succeeds(self, command: str) -> list[str]:
        code, messages = self._do(command)
        assert code == pam.PAM_SUCCESS, messages
        return messages

    def auth(self, pin: str = TEST_PIN) -> list[str]:
        return self._succeeds(f"auth {pin}")

    def open(self) -> None:
        self._succeeds("open")

    def close(self) -> None:
        self._succeeds("close")

    def end(self) -> None:
        self._do("end")
        self.proc.wait(timeout=30)

    def log_out(self) -> None:
        """Close the session and end the PAM handle (the process exits)."""
        self.close()
        self.end()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass
class Machine:
    spec: str
    store: Path
    mnt: Path
    users: tuple[str, str]  # alice-like: profile by pattern; bob-like: profile recorded by `profile setup`
    clients: list[Client]

    def profile(self, user: str) -> Path:
        return self.mnt / user / "private"

    def client(self, service: str, user: str) -> Client:
        client = Client(service, user)
        self.clients.append(client)
        return client

    def signed_in(self, service: str, user: str) -> Client:
        """A PAM client of USER's, authenticated with the key's PIN and its session opened."""
        client = self.client(service, user)
        client.auth()
        client.open()
        return client

    def auth_line(self, *flags: str, **options: object) -> str:
        return module_line("required", *flags, store=self.store, device=self.spec, **options)

    def pattern_service(self, *session_flags: str) -> contextlib.AbstractContextManager[str]:
        """auth with profile=MNT/%u/private, and a session line with `session_flags`."""
        return pam_service(self.auth_line(profile=f"{self.mnt}/%u/private"), session_line(*session_flags))

    def fixed_service(self, directory: Path) -> contextlib.AbstractContextManager[str]:
        """auth with profile=DIRECTORY (the same for every user), and a session line with lock_on_logout."""
        return pam_service(self.auth_line(profile=directory), session_line("lock_on_logout"))


def session_line(*flags: str) -> str:
    return " ".join(["session", "required", str(MODULE), *flags])


def unlocked(directory: Path) -> bool:
    """Readable as plaintext: the note opens and its name is in the listing."""
    status = fscrypt.profile_status(str(directory))
    if status is fscrypt.Status.UNLOCKED:
        assert (directory / "notes.txt").read_bytes() == NOTE
        return True
    assert status is fscrypt.Status.LOCKED, status
    assert "notes.txt" not in os.listdir(directory)  # names are ciphertext while locked
    return False


@pytest.fixture
def machine(served_key, tmp_path) -> Iterator[Machine]:
    tag = uuid.uuid4().hex[:8]
    users = (f"hmu-pa-{tag}", f"hmu-pb-{tag}")
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    with loop_ext4(tmp_path) as mnt:
        m = Machine(served_key.spec, store, mnt, users, [])
        try:
            for user in users:
                enroll(str(store), served_key.spec, ScriptedInteraction([TEST_PIN]), user)
                m.profile(user).mkdir(parents=True)
                uk = unlock(str(store), served_key.spec, ScriptedInteraction([TEST_PIN]), user=user).unlock_key
                fscrypt.setup_profile(str(m.profile(user)), uk)
                (m.profile(user) / "notes.txt").write_bytes(NOTE)
                assert fscrypt.lock_profile(str(m.profile(user))) is fscrypt.Status.LOCKED
            target = dependents.profile_target(str(m.profile(users[1])))
            assert dependents.note(store, users[1], target, uk)  # what `profile setup` writes in the record
            yield m
        finally:
            for client in m.clients:
                client.stop()
            for user in users:
                (sessions.RUN_DIR / f"{user}.json").unlink(missing_ok=True)


def test_two_sessions_by_pattern_the_last_close_locks(machine):
    alice, bob = machine.users
    with machine.pattern_service("lock_on_logout") as service:
        first = machine.signed_in(service, alice)
        assert unlocked(machine.profile(alice))
        assert not unlocked(machine.profile(bob))  # the pattern gave alice's directory only

        second = machine.signed_in(service, alice)
        first.log_out()
        assert unlocked(machine.profile(alice))  # one session of alice's is still open

        second.close()
        assert not unlocked(machine.profile(alice))  # her last session closed: locked
        second.end()
    assert not (sessions.RUN_DIR / f"{alice}.json").exists()  # nothing left behind in /run


def test_the_record_names_the_profile_and_another_users_pin_never_opens_it(machine):
    alice, bob = machine.users
    with pam_service(machine.auth_line("profile"), session_line("lock_on_logout")) as service:
        # alice's record names no profile: her sign-in unlocks nothing (and does not fail)
        client = machine.signed_in(service, alice)
        assert not unlocked(machine.profile(alice)) and not unlocked(machine.profile(bob))
        client.log_out()

        client = machine.signed_in(service, bob)
        assert unlocked(machine.profile(bob)) and not unlocked(machine.profile(alice))
        client.log_out()
        assert not unlocked(machine.profile(bob))


def test_another_users_logout_never_locks_your_profile(machine):
    alice, bob = machine.users
    with (
        machine.pattern_service("lock_on_logout") as mine,
        machine.fixed_service(machine.profile(alice)) as fixed,
    ):
        client = machine.signed_in(mine, alice)
        assert unlocked(machine.profile(alice))

        # bob signs in on a line whose fixed profile= is alice's directory: bob's key does not open it, his sign-in
        # stands, and his last logout does not lock alice's profile under her open session
        other = machine.client(fixed, bob)
        messages = other.auth()
        assert any("profile was not unlocked" in m and "another key" in m for m in messages), messages
        other.open()
        other.log_out()
        assert unlocked(machine.profile(alice))

        client.log_out()
        assert not unlocked(machine.profile(alice))


def test_a_crashed_session_does_not_keep_the_profile_unlocked(machine):
    alice, _ = machine.users
    with machine.pattern_service("lock_on_logout") as service:
        crashed = machine.signed_in(service, alice)
        crashed.kill()  # never calls close_session

        machine.signed_in(service, alice).log_out()
        assert not unlocked(machine.profile(alice))  # the dead process's session no longer counts


def test_a_sign_in_without_its_session_yet_is_not_locked_under(machine):
    alice, _ = machine.users
    with machine.pattern_service("lock_on_logout") as service:
        client = machine.signed_in(service, alice)
        arriving = machine.client(service, alice)
        arriving.auth()  # authenticated, its session not opened yet
        client.log_out()
        assert unlocked(machine.profile(alice))
        arriving.open()
        arriving.log_out()
        assert not unlocked(machine.profile(alice))


def test_without_lock_on_logout_nothing_is_locked(machine):
    alice, _ = machine.users
    with machine.pattern_service() as service:
        machine.signed_in(service, alice).log_out()
        assert unlocked(machine.profile(alice))


def test_a_bad_pattern_is_a_configuration_error_named_in_syslog(machine):
    alice, _ = machine.users
    bad = f"{machine.mnt}/%s/private"
    with syslog.listening() as log:
        with pam_service(machine.auth_line(profile=bad), session_line("lock_on_logout")) as service:
            client = machine.client(service, alice)
            code, messages = client._do(f"auth {TEST_PIN}")
            client.end()
        if log is not None:
            log.settle()
            text = log.text(service)
    assert code == pam.PAM_SYSTEM_ERR and not any("PIN" in m for m in messages)  # refused before any prompt
    assert not unlocked(machine.profile(alice))
    if log is None:
        pytest.skip("the result is checked; the syslog line needs /dev/log, which something else holds here")
    assert f"bad option profile={bad}" in text, text


def test_a_pam_host_that_is_not_root_counts_nothing_and_says_so(tmp_path):
    """A screen locker runs PAM as the user: its close_session cannot lock (the state and the key removal are
    root's), so the module says so and steps aside (PAM_IGNORE) without starting the helper."""
    require_root()
    if shutil.which("gcc") is None or not Path("/usr/include/security/pam_appl.h").is_file():
        pytest.skip("needs gcc and libpam0g-dev to build the session client")
    nobody = pwd.getpwnam("nobody")
    user = f"hmu-pn-{uuid.uuid4().hex[:8]}"
    public = Path(tempfile.mkdtemp(prefix="hmu-session-"))  # 0755: the unprivileged host loads the module from here
    try:
        os.chmod(public, 0o755)
        client = public / "sessionclient"
        subprocess.run(["gcc", "-O2", "-o", str(client), str(REPO / "tests/pam/sessionclient.c"), "-lpam"], check=True)
        module = public / "pam_hmacunlock.so"
        shutil.copy(require_module(), module)
        lines = (f"session required {module} lock_on_logout", "session required pam_permit.so")
        with syslog.listening() as log, pam_service(*lines) as service:
            if log is not None:
                os.chmod("/dev/log", 0o666)  # ours while we listen; as a syslog daemon's is, writable by everyone
            ran = subprocess.run(
                [str(client), service, user], capture_output=True, text=True, timeout=60, user=nobody.pw_uid,
                group=nobody.pw_gid, extra_groups=[], env={"PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            if log is not None:
                log.settle()
                text = log.text(service)
        assert ran.returncode == 0 and "open 0 close 0" in ran.stdout, ran.stdout + ran.stderr  # ignored, not failed
        assert not (sessions.RUN_DIR / f"{user}.json").exists()
        if log is None:
            pytest.skip("the result is checked; the syslog line needs /dev/log, which something else holds here")
        assert text.count("lock_on_logout needs a root PAM host") == 2, text  # open and close each say so
    finally:
        shutil.rmtree(public, ignore_errors=True)


def test_the_warm_helper_serves_the_session_events_too(machine, daemon, tmp_path):
    """With socket= (the installed default) the open and close go to the warm helper like a sign-in does."""
    alice, _ = machine.users
    never = fake_helper(tmp_path, "crash")  # spawning it would fail the step
    warm = {"socket": daemon.socket, "helper": never}
    with pam_service(
        machine.auth_line(profile=f"{machine.mnt}/%u/private", **warm),
        session_line("lock_on_logout", *(f"{k}={v}" for k, v in warm.items())),
    ) as service:
        client = machine.signed_in(service, alice)
        assert unlocked(machine.profile(alice))
        client.log_out()
    assert not unlocked(machine.profile(alice))
    assert daemon.served() == 3, daemon.text()  # the sign-in, the open, the close


def test_the_profile_unlock_and_the_lock_at_logout_are_audited(machine):
    """Through real libpam: `profile-unlocked` at sign-in, `profile-unlock-failed` for a profile the key does not
    open, `profile-locked` at the last logout, and `profile-lock-failed` for a profile whose filesystem refuses the
    removal (a noted profile on a tmpfs, which has no fscrypt); facility authpriv, never a secret."""
    import syslog as syslog_module

    alice, bob = machine.users
    with syslog.listening() as log:
        if log is None:
            pytest.skip("/dev/log is held by something else (a syslog daemon or another test); this test listens there")
        with (
            machine.pattern_service("lock_on_logout") as mine,
            machine.fixed_service(machine.profile(alice)) as fixed,
        ):
            client = machine.signed_in(mine, alice)
            # bob's key does not open alice's directory: his sign-in stands, the profile stays locked
            machine.signed_in(fixed, bob).log_out()
            shm = os.stat("/dev/shm")
            with sessions.state(alice) as state:  # a profile noted on a filesystem that cannot remove a key
                assert state is not None
                state.add_unlocked(fscrypt.Unlocked("/dev/shm", "/dev/shm", shm.st_dev, b"\x07" * 16))
            code, _ = client._do("close")
            client.end()
        log.settle()
        text = log.text(alice[-8:])  # both users and their directories carry the tag
    assert code == pam.PAM_SESSION_ERR  # a profile not locked fails the close_session (the module logs why)
    assert not unlocked(machine.profile(alice))
    events = [line for line in text.splitlines() if "hmacunlock[" in line and "profile-" in line]
    notice = f"<{syslog_module.LOG_AUTHPRIV | syslog_module.LOG_NOTICE}>"
    warning = f"<{syslog_module.LOG_AUTHPRIV | syslog_module.LOG_WARNING}>"
    err = f"<{syslog_module.LOG_AUTHPRIV | syslog_module.LOG_ERR}>"
    mine_dir, shm_dir = machine.profile(alice), "/dev/shm"

    def one(priority: str, line: str) -> None:
        found = [e for e in events if e.endswith(line)]
        assert len(found) == 1 and found[0].startswith(priority), (line, events)

    one(notice, f"profile-unlocked user={alice} dir={mine_dir}")
    one(warning, f"profile-unlock-failed user={bob} dir={mine_dir} error=TargetError")
    one(notice, f"profile-locked user={alice} dir={mine_dir} status=locked")
    one(err, f"profile-lock-failed user={alice} dir={shm_dir} error=TargetError")
    assert len(events) == 4, events
    assert TEST_PIN not in text
