"""Profiles per user, the parts below PAM (issue 16): the session state that `lock_on_logout` keeps
(libhmacunlock/sessions.py), and the request keys the module sends for it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hmacunlock_pam.protocol import ProtocolError, Request

from libhmacunlock import sessions
from libhmacunlock.errors import UnsafeLocation
from libhmacunlock.targets.fscrypt import Unlocked
from tests.fixtures.system import require_root

# --- the request ------------------------------------------------------------------------------------------------


def test_the_session_and_profile_keys_parse():
    r = Request.parse(b"user=alice\nsession=close\npid=4242\n")
    assert (r.session, r.pid, r.profile_record) == ("close", 4242, False)
    assert Request.parse(b"user=alice\nprofile_record=1\npid=1\n").profile_record


@pytest.mark.parametrize(
    "payload",
    [
        b"user=alice\nsession=reopen\npid=1\n",
        b"user=alice\nsession=open\npid=0\n",
        b"user=alice\nsession=open\npid=-3\n",
        b"user=alice\nsession=open\npid=4294967296\n",
        b"user=alice\nprofile_record=yes\n",
        b"user=alice\nprofile=/home/alice\nprofile_record=1\n",
    ],
)
def test_malformed_session_keys_are_refused(payload):
    with pytest.raises(ProtocolError):
        Request.parse(payload)


# --- the session state ------------------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path) -> Path:
    require_root()  # the state is root's: as anyone else sessions.state() yields None
    return tmp_path / "sessions"


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_last_close_of_a_live_process_is_the_one_that_locks(run_dir):
    me = os.getpid()
    assert sessions.opened("alice", me, run_dir) == 1
    assert sessions.opened("alice", me, run_dir) == 2  # two sessions in one process count twice
    first = sessions.closed("alice", me, run_dir)
    assert first.counted and first.remaining == 1 and first.locked == ()
    last = sessions.closed("alice", me, run_dir)
    assert last.counted and last.remaining == 0
    assert not (run_dir / "alice.json").exists()  # nothing left once nothing is open


def test_a_dead_processs_session_no_longer_counts(run_dir):
    with sessions.state("alice", run_dir) as state:
        state.sessions.append(sessions.Session(dead_pid(), 1, open=1))
    assert sessions.opened("alice", os.getpid(), run_dir) == 1  # the crashed one was dropped
    assert sessions.closed("alice", os.getpid(), run_dir).remaining == 0


def test_a_reused_pid_is_another_process(run_dir):
    with sessions.state("alice", run_dir) as state:
        state.sessions.append(sessions.Session(os.getpid(), 1, open=1))  # our pid, another start time
    assert sessions.opened("alice", os.getpid(), run_dir) == 1


def test_a_close_that_was_never_opened_locks_nothing(run_dir):
    unlocked = Unlocked("/nonexistent/private", "/nonexistent", 1, bytes(16))
    with sessions.state("alice", run_dir) as state:
        state.add_unlocked(unlocked)
    closed = sessions.closed("alice", os.getpid(), run_dir)
    assert not closed.counted and closed.locked == ()
    with sessions.state("alice", run_dir) as state:
        assert state.unlocked == [unlocked]  # still to lock at a real last logout


def test_a_pending_sign_in_counts_until_its_session_opens(run_dir):
    me = os.getpid()
    sessions.opened("alice", me, run_dir)
    with sessions.state("alice", run_dir) as state:
        state.signed_in(me)  # a second sign-in of this process, its session not open yet
    assert sessions.closed("alice", me, run_dir).remaining == 1
    assert sessions.opened("alice", me, run_dir) == 1  # the pending sign-in became the open session
    assert sessions.closed("alice", me, run_dir).remaining == 0


def test_an_unsafe_state_directory_or_file_is_refused(run_dir):
    run_dir.mkdir(mode=0o755)
    os.chmod(run_dir, 0o755)
    with pytest.raises(UnsafeLocation):
        sessions.opened("alice", os.getpid(), run_dir)
    os.chmod(run_dir, 0o700)
    (run_dir / "alice.json").write_text("{}")
    os.chmod(run_dir / "alice.json", 0o644)
    with pytest.raises(UnsafeLocation):
        sessions.opened("alice", os.getpid(), run_dir)
    (run_dir / "alice.json").unlink()
    (run_dir / "alice.json").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeLocation):
        sessions.opened("alice", os.getpid(), run_dir)


def test_a_garbled_state_is_refused_not_reset(run_dir):
    run_dir.mkdir(mode=0o700)
    path = run_dir / "alice.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"sessions": [{"pid": "x"}]}')
    os.close(fd)
    with pytest.raises(UnsafeLocation):
        sessions.closed("alice", os.getpid(), run_dir)
    assert path.read_bytes() == b'{"sessions": [{"pid": "x"}]}'  # never overwritten: no lock on a guess


def test_sign_ins_without_sessions_do_not_pile_up(run_dir):
    for _ in range(3):  # hosts that sign in and exit without a session (pamtester authenticate)
        host = subprocess.Popen(["sleep", "60"])
        with sessions.state("alice", run_dir) as state:
            state.signed_in(host.pid)
        host.kill()
        host.wait()
    with sessions.state("alice", run_dir) as state:
        state.signed_in(os.getpid())
        assert [s.pid for s in state.sessions] == [os.getpid()]


# --- profile=PATTERN, expanded by the helper for the user the key unlocked ------------------------------------


@pytest.mark.parametrize(
    ("pattern", "user", "expected"),
    [
        ("/home/%u/private", "alice", "/home/alice/private"),
        ("/srv/100%%/%u", "bob", "/srv/100%/bob"),
        ("/home/alice/private", "bob", "/home/alice/private"),  # a fixed path, as before
        ("/p/%u%u", "x", "/p/xx"),
    ],
)
def test_a_pattern_expands_to_the_users_directory(pattern, user, expected):
    from hmacunlock_pam.profiles import expand

    assert expand(pattern, user) == expected


@pytest.mark.parametrize(
    ("pattern", "user"), [("/home/%u/private", ".."), ("/home/%u", "."), ("/home/%s", "alice"), ("/home/%", "a")]
)
def test_an_expansion_that_is_no_usable_directory_is_refused(pattern, user):
    from hmacunlock_pam.profiles import expand

    with pytest.raises(ValueError):
        expand(pattern, user)
