"""Run-time lock files are removed when let go (libhmacunlock/locks.py), and that never lets two hold one lock.

Real processes contend for one lock through the real lock directory (/run/hmacunlock/locks as root, the private
fallback otherwise), each under a name of its own (a fresh identity per test), so other runs on the machine are
never in the way.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from libhmacunlock import locks
from tests.fixtures.child import as_user, python_child

WAIT = 60.0  # seconds a step may take before the test gives up on it (never a measurement)

CONTENDER = """
import os, sys
from libhmacunlock.locks import FileLock
identity, shared, rounds, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock = FileLock("test", identity)
me = str(os.getpid()).encode()
for _ in range(rounds):
    assert lock.acquire(None if timeout == "none" else float(timeout)), "timed out"
    assert lock.held
    fd = os.open(shared, os.O_RDWR)
    try:
        inside = os.pread(fd, 64, 0)
        if inside:
            sys.exit(f"two holders: {inside!r} was inside when {me!r} came in")
        os.pwrite(fd, me, 0)
        os.sched_yield()
        if os.pread(fd, 64, 0) != me:
            sys.exit("someone else came in while I held the lock")
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    lock.release()
"""

HOLD_ON_SIGNAL = """
import sys
from libhmacunlock.locks import FileLock
lock = FileLock("test", sys.argv[1])
assert lock.acquire(timeout=60)
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""


@pytest.fixture
def identity() -> str:
    return f"hmu-test-{uuid.uuid4().hex}"


@pytest.fixture
def lock_file(identity) -> Path:
    directory = locks.lock_dir()
    if directory is None:
        pytest.skip("no usable lock directory here (not root, and neither XDG_RUNTIME_DIR nor /tmp is safe)")
    return directory / locks.lock_name("test", identity)


def _opened_by(pid: int, path: Path) -> bool:
    """Process `pid` has `path` open (its /proc fd table)."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def test_a_released_lock_leaves_no_file(lock_file, identity):
    lock = locks.FileLock("test", identity)
    assert lock.acquire(timeout=0) and lock.held
    assert lock_file.is_file()
    lock.release()
    assert not lock.held and not lock_file.exists()
    with locks.held("test", identity) as held:
        assert held and lock_file.is_file()
    assert not lock_file.exists()


def test_processes_taking_turns_never_hold_one_lock_together_and_leave_no_file(lock_file, identity, tmp_path):
    """Four processes, two waiting in flock and two polling, take one lock 300 times each; each writes its pid
    into a shared file while it holds the lock and finds it empty when it comes in. The releases unlink the lock
    file under waiters that opened it already: they must notice and take the new file's lock instead."""
    shared = tmp_path / "inside"
    shared.write_bytes(b"")
    procs = [
        python_child(CONTENDER, identity, str(shared), "300", timeout, stderr=subprocess.PIPE)
        for timeout in ("none", "60", "none", "60")
    ]
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(err)
    assert not failures, failures
    assert not lock_file.exists()  # the last release removed it


def test_a_waiter_that_opened_the_file_before_it_was_removed_takes_the_lock_of_the_new_file(lock_file, identity):
    """Deterministic: the waiter is stopped (SIGSTOP) after it opened the lock file, the holder releases (the file
    goes), then the waiter goes on. It must hold the lock of the file now at the path — so a third party cannot
    take it — not the removed file's, which would let anyone else in."""
    holder = locks.FileLock("test", identity)
    assert holder.acquire(timeout=0)
    waiter = python_child(HOLD_ON_SIGNAL, identity, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _wait_until(lambda: _opened_by(waiter.pid, lock_file), "the waiter opened the lock file")
        os.kill(waiter.pid, signal.SIGSTOP)
        holder.release()
        assert not lock_file.exists()  # a waiter that has the file open holds no lock: the release removed it
    finally:
        os.kill(waiter.pid, signal.SIGCONT)
    try:
        assert waiter.stdout is not None
        assert waiter.stdout.readline() == "held\n"
        assert lock_file.is_file()  # made again by the waiter (an inode number may be reused: not compared)
        third = locks.FileLock("test", identity)
        assert not third.acquire(timeout=0)  # the waiter holds the lock of the file at the path
    finally:
        waiter.communicate("go\n", timeout=WAIT)
    assert waiter.returncode == 0
    assert not lock_file.exists()


def test_a_forked_copy_still_holding_the_lock_keeps_its_file(lock_file, identity):
    """A process that forks while holding a lock shares it with the child (pam_module/helper.py finish(): the
    record's writer): the parent's release must not remove the file the child still holds the lock of, or a
    newcomer would make a new file and hold its lock alongside the child."""
    lock = locks.FileLock("test", identity)
    assert lock.acquire(timeout=0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: holds the lock (the shared open file) until the pipe closes
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    try:
        lock.release()
        assert lock_file.exists()
        newcomer = locks.FileLock("test", identity)
        assert not newcomer.acquire(timeout=0)  # the child holds it still
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)
    assert newcomer.acquire(timeout=0)
    newcomer.release()
    assert not lock_file.exists()


def _lock_dir_as(uid: int) -> str:
    """locks.lock_dir() as `uid` (no XDG_RUNTIME_DIR: the /tmp fallback)."""

    def lock_dir() -> str:
        os.environ.pop("XDG_RUNTIME_DIR", None)
        return str(locks.lock_dir())

    return as_user(uid, lock_dir)


def test_a_fallback_directory_another_user_made_first_is_not_used():
    """Another user made /tmp/hmacunlock-UID first, open to all (here: root, for nobody): they could swap `locks`
    below it for a link of theirs, so none of it is used (no lock rather than someone else's); once the directory
    is the user's own and closed, it is."""
    if os.geteuid() != 0:
        pytest.skip("needs root: another user's directory for nobody (uid 65534)")
    nobody = 65534
    parent = Path(f"/tmp/hmacunlock-{nobody}")
    aside = parent.with_name(parent.name + f".test-{os.getpid()}")
    if parent.exists():
        parent.rename(aside)  # nobody's own, from some other run: put back below
    try:
        parent.mkdir(mode=0o777)
        parent.chmod(0o777)  # root's, writable by all
        assert _lock_dir_as(nobody) == "None"
        os.chown(parent, nobody, nobody)
        parent.chmod(0o700)
        assert _lock_dir_as(nobody) == str(parent / "locks")
    finally:
        shutil.rmtree(parent, ignore_errors=True)
        if aside.exists():
            aside.rename(parent)
