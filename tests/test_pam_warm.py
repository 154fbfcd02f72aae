"""The warm helper (`hmacunlock pam warm-helper`, the module's `socket=`) through real libpam and the software key.

The daemon runs as a real process; pamtester signs in through a service file naming pam_hmacunlock.so with
`socket=`. That the daemon served a sign-in is shown by its log (one "serving a sign-in in child N" per
connection, from the pre-forked child that took it) and, where it matters, by a `helper=` that would fail if the
module spawned it. The daemon's children are read from /proc (each one's parent pid).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.pam_signin import USER, WRONG_PIN, line
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.terminal import read_until
from tests.fixtures.warm import WARM_HELPER, Daemon, alive
from tests.pam.stack import build_module, fake_helper, pam_service, pamtester, pamtester_waiting

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534


def warm_line(key, store, daemon_socket, *flags, **options):
    return line(key, store, *flags, socket=daemon_socket, **options)


def test_the_right_pin_signs_in_through_the_daemon_and_spawns_nothing(served_key, enrolled, daemon, tmp_path):
    never = fake_helper(tmp_path, "crash")  # spawning it would fail the sign-in
    with pam_service(warm_line(served_key, enrolled, daemon.socket, "cue", helper=never)) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert run.ok, run.output + daemon.text()
    assert "Security key PIN:" in run.output and "Touch your security key" in run.output
    assert daemon.served() == 1


def test_a_wrong_pin_fails_with_the_attempts_left(served_key, enrolled, daemon, tmp_path):
    never = fake_helper(tmp_path, "crash")
    with pam_service(warm_line(served_key, enrolled, daemon.socket, max_tries=1, helper=never)) as service:
        run = pamtester(service, USER, WRONG_PIN + "\n")
    assert not run.ok and "attempts left" in run.output, run.output
    assert daemon.served() == 1


@pytest.mark.parametrize("killed", ["the serving child", "the daemon and the serving child"])
def test_a_sign_in_whose_child_dies_mid_exchange_fails_closed_without_fallback(served_key, enrolled, daemon, killed):
    # No helper=: a fallback would spawn the real helper and succeed, so only fail-closed passes this test.
    with pam_service(warm_line(served_key, enrolled, daemon.socket)) as service:
        waiting = pamtester_waiting(service, USER)  # held at the module's early PIN prompt
        try:
            daemon.wait_for(lambda: daemon.served() == 1, "the daemon to take the sign-in")
            # Killed before its first frame, a child is replaced by a spawned helper (nothing was asked yet: the
            # module's first-frame fallback); only once the PIN prompt shows is the exchange under way.
            read_until(waiting, "PIN:")
            child = daemon.children()[0]
            if killed != "the serving child":
                spares = daemon.spares()
                os.kill(daemon.proc.pid, signal.SIGKILL)
                daemon.proc.wait(timeout=30)
            os.kill(child, signal.SIGKILL)
            out, _ = waiting.communicate(TEST_PIN + "\n", timeout=60)
        finally:
            waiting.kill()
        assert waiting.returncode != 0 and "System error" in out, out
        if killed == "the serving child":
            # The daemon goes on: the next sign-in is served by another child.
            run = pamtester(service, USER, TEST_PIN + "\n")
            assert run.ok, run.output + daemon.text()
            assert daemon.served() == 2 and len(set(daemon.children())) == 2
        else:
            # Spares do not outlive the daemon (nobody would replace them, or stop them with the daemon).
            deadline = time.monotonic() + 30
            while any(alive(pid) for pid in spares) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert spares and not any(alive(pid) for pid in spares)


def test_each_child_serves_one_sign_in_and_is_replaced(served_key, enrolled, sockdir, tmp_path):
    d = Daemon(sockdir, spares=1)
    try:
        never = fake_helper(tmp_path, "crash")
        with pam_service(warm_line(served_key, enrolled, d.socket, helper=never)) as service:
            for n in range(1, 4):
                d.wait_for(lambda: len(d.spares()) == 1, "one spare")
                spare = d.spares().pop()
                run = pamtester(service, USER, TEST_PIN + "\n")
                assert run.ok, run.output + d.text()
                assert d.served() == n and d.children()[-1] == spare  # the spare that waited took it
                d.wait_for(lambda pid=spare: not alive(pid), "the child to exit after its one sign-in")
        # Three sign-ins in a row, with one spare at a time: three children, each replaced after its sign-in.
        assert len(set(d.children())) == 3
        d.wait_for(lambda: len(d.spares()) == 1, "the last child's replacement")
    finally:
        assert d.stop() == 0


def test_sigterm_ends_the_spares(served_key, sockdir):
    d = Daemon(sockdir, spares=3)
    d.wait_for(lambda: len(d.spares()) == 3, "three spares")
    spares = d.spares()
    assert d.stop() == 0
    assert not any(alive(pid) for pid in spares)


@pytest.mark.parametrize(
    "what, mode, owner",
    [
        ("socket", 0o660, 0),  # group-writable
        ("socket", 0o600, NOBODY),  # not root's
        ("directory", 0o700, NOBODY),
        ("directory", 0o770, 0),
    ],
)
def test_an_unsafe_socket_path_falls_back_to_spawning(served_key, enrolled, daemon, what, mode, owner):
    path = daemon.socket if what == "socket" else daemon.socket.parent
    os.chown(path, owner, 0)
    path.chmod(mode)
    with pam_service(warm_line(served_key, enrolled, daemon.socket)) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert run.ok, run.output  # the spawned helper signed in
    assert daemon.served() == 0


def test_no_daemon_falls_back_to_spawning(served_key, enrolled, sockdir):
    sockdir.mkdir(mode=0o700)
    with pam_service(warm_line(served_key, enrolled, sockdir / "helper.sock", "debug")) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert run.ok, run.output


def test_the_daemon_refuses_a_peer_that_is_not_root(daemon):
    # The daemon's own check, behind the socket's mode: open the path up so that nobody can reach it at all.
    daemon.socket.parent.parent.chmod(0o711)
    daemon.socket.parent.chmod(0o711)
    daemon.socket.chmod(0o666)
    client = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(daemon.socket)!r})\n"
        "s.settimeout(30)\n"
        "try:\n"
        "    s.sendall(b'Q\\x00\\x0auser=root\\n')\n"
        "    data = s.recv(4096)\n"
        "except (ConnectionResetError, BrokenPipeError):\n"
        "    data = b''  # closed with our request unread, or before it was sent (a waiting child is quick)\n"
        "sys.exit(0 if data == b'' else 1)\n"
    )
    proc = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", client],
        user=NOBODY,
        group=NOBODY,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr  # closed without a single frame, let alone a verdict
    assert f"refused a connection from uid {NOBODY}" in daemon.text() and daemon.served() == 0


def test_two_concurrent_sign_ins_are_both_served(served_key, enrolled, daemon, tmp_path):
    never = fake_helper(tmp_path, "crash")
    with pam_service(warm_line(served_key, enrolled, daemon.socket, helper=never)) as service:
        first, second = pamtester_waiting(service, USER), pamtester_waiting(service, USER)
        try:
            # Both are inside the daemon at once, each in its own child, before either gets its PIN.
            daemon.wait_for(lambda: daemon.served() == 2, "two sign-ins in the daemon")
            assert len(set(daemon.children())) == 2
            outputs = [p.communicate(TEST_PIN + "\n", timeout=60)[0] for p in (first, second)]
        finally:
            first.kill()
            second.kill()
    assert first.returncode == 0 and second.returncode == 0, outputs


def test_sigterm_exits_0_and_removes_the_socket(served_key, sockdir):
    d = Daemon(sockdir)
    assert d.socket.is_socket() and (d.socket.stat().st_mode & 0o777) == 0o600
    assert (sockdir.stat().st_mode & 0o777) == 0o700
    assert d.stop() == 0
    assert not d.socket.exists()


def test_a_socket_passed_by_systemd_is_served_and_left_in_place(served_key, enrolled, sockdir, tmp_path):
    sockdir.mkdir(mode=0o700)
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(sockdir / "helper.sock"))
    (sockdir / "helper.sock").chmod(0o600)
    listening.listen(8)
    # As systemd does: the socket as descriptor 3, LISTEN_PID naming the daemon's own pid, LISTEN_FDS=1.
    fd = listening.fileno()
    as_systemd = (
        f"import os, sys\nif {fd} != 3:\n    os.dup2({fd}, 3); os.close({fd})\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
        f"os.execv(sys.executable, {WARM_HELPER!r})"
    )
    d = Daemon(sockdir, [sys.executable, "-c", as_systemd], pass_fds=(fd,))
    listening.close()
    try:
        assert "the socket systemd passed" in d.text()
        with pam_service(warm_line(served_key, enrolled, d.socket, helper=fake_helper(tmp_path, "crash"))) as service:
            run = pamtester(service, USER, TEST_PIN + "\n")
        assert run.ok, run.output + d.text()
        assert d.served() == 1
    finally:
        assert d.stop() == 0
    assert d.socket.is_socket()  # systemd's to remove (RemoveOnStop=), not the daemon's


def test_a_server_that_is_not_root_is_refused_without_fallback(served_key, enrolled, sockdir, tmp_path):
    # The path passes the module's checks (root made the socket file), but the process listening on it is nobody's:
    # a peer's credentials are the ones of whoever called listen(). It would answer "success".
    sockdir.mkdir(mode=0o700)
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(sockdir / "helper.sock"))
    (sockdir / "helper.sock").chmod(0o600)
    impostor = (
        "import socket, sys\n"
        f"s = socket.socket(fileno={bound.fileno()})\n"
        "s.listen(1)\nprint('listening', flush=True)\n"
        "s.settimeout(60)\n"
        "conn, _ = s.accept()\n"
        "conn.sendall(b'V\\x00\\x07success')\n"
        "conn.close()\n"
    )
    proc = subprocess.Popen(
        ["/usr/bin/python3", "-I", "-c", impostor],
        user=NOBODY,
        group=NOBODY,
        cwd="/",
        pass_fds=(bound.fileno(),),
        stdout=subprocess.PIPE,
        text=True,
    )
    bound.close()
    try:
        assert proc.stdout.readline().strip() == "listening"
        # helper= a fake that succeeds: a fallback to spawning would sign in, so only fail-closed passes.
        spawned = fake_helper(tmp_path, "success")
        with pam_service(warm_line(served_key, enrolled, sockdir / "helper.sock", helper=spawned)) as service:
            run = pamtester(service, USER, TEST_PIN + "\n")
            assert not run.ok and "System error" in run.output, run.output
            proc.kill()
            proc.wait()
            # The same line with nobody listening any more (ECONNREFUSED) does fall back, and the fake signs in.
            assert pamtester(service, USER, TEST_PIN + "\n").ok
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("value", ["run/helper.sock", "/" + "x" * 120])
def test_a_relative_or_too_long_socket_path_is_a_configuration_error(served_key, enrolled, tmp_path, value):
    spawned = fake_helper(tmp_path, "success")  # never reached: the option is refused before anything starts
    with pam_service(line(served_key, enrolled, socket=value, helper=spawned)) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert not run.ok and "System error" in run.output, run.output


def _module_with_default_socket(directory: Path, default_socket: Path) -> Path:
    """The module as `make install` builds it, but with DEFAULT_SOCKET naming this test's daemon."""
    return build_module(directory / "pam_hmacunlock.so", DEFAULT_SOCKET=str(default_socket))


def test_the_built_in_default_socket_is_tried_without_socket_and_nosocket_turns_it_off(
    served_key, enrolled, daemon, tmp_path
):
    from tests.pam.stack import MODULE

    module = _module_with_default_socket(tmp_path, daemon.socket)
    never = fake_helper(tmp_path, "crash")  # spawning it would fail the sign-in
    plain = line(served_key, enrolled, helper=never)
    assert "socket=" not in plain
    with pam_service(plain.replace(str(MODULE), str(module))) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert run.ok, run.output + daemon.text()
    assert daemon.served() == 1  # no socket= on the line: the compiled-in default was used
    with pam_service(line(served_key, enrolled, "nosocket").replace(str(MODULE), str(module))) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert run.ok, run.output
    assert daemon.served() == 1  # nosocket: spawned, the daemon saw nothing
    # The source-tree build has no default: without socket= it never reaches a daemon (an installed one included).
    with pam_service(line(served_key, enrolled, helper=never)) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert not run.ok and daemon.served() == 1, run.output


def test_socket_and_nosocket_together_are_a_configuration_error(served_key, enrolled, daemon):
    with pam_service(warm_line(served_key, enrolled, daemon.socket, "nosocket")) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert not run.ok and daemon.served() == 0, run.output


def _hold(daemon_socket, request: bytes) -> socket.socket:
    """A sign-in that never answers: the request is sent, the PIN prompt that comes is never answered."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(60)
    conn.connect(str(daemon_socket))
    conn.sendall(b"Q" + len(request).to_bytes(2, "big") + request)
    return conn


def _first_frame(conn: socket.socket) -> bytes:
    """The first frame's type, or b"" when the child closed without one."""
    return conn.recv(1)


def test_k_plus_3_sign_ins_that_never_answer_leave_spares_and_roots_sign_in_succeeds(served_key, enrolled, sockdir):
    """Busy children are no spares: each one taken is replaced at once, so K + 3 unanswered prompts (su victim,
    left at the prompt, from five callers) cannot take every child, and root's sign-in still goes through."""
    d = Daemon(sockdir, spares=2)
    held = []
    try:
        d.wait_for(lambda: len(d.spares()) == 2, "two spares")
        for caller in range(2 + 3):
            request = f"user={USER}\nstore={enrolled}\ndevice={served_key.spec}\nruid={5000 + caller}\n".encode()
            held.append(_hold(d.socket, request))
            assert _first_frame(held[-1]) == b"L"  # a child took it (and will wait for the PIN forever)
        assert d.served() == 5
        d.wait_for(lambda: len(d.spares()) == 2, "two new spares while five children wait for a PIN")
        with pam_service(warm_line(served_key, enrolled, d.socket)) as service:
            run = pamtester(service, USER, TEST_PIN + "\n")
        assert run.ok, run.output + d.text()
        assert d.served() == 6  # root's sign-in was the warm helper's, not a fallback
    finally:
        for conn in held:
            conn.close()
        assert d.stop() == 0


def test_one_caller_has_at_most_four_sign_ins_in_progress_the_next_is_spawned(served_key, enrolled, sockdir):
    from hmacunlock_pam.warm import MAX_PER_CALLER

    d = Daemon(sockdir, spares=2)
    held = []
    request = f"user={USER}\nstore={enrolled}\ndevice={served_key.spec}\nruid=4242\n".encode()
    try:
        for _ in range(MAX_PER_CALLER):
            held.append(_hold(d.socket, request))
            assert _first_frame(held[-1]) == b"L"
        held.append(_hold(d.socket, request))
        assert _first_frame(held[-1]) == b""  # refused before any frame: the module would spawn a helper for it
        assert "caller uid 4242 has 4 sign-ins in progress" in d.text()
        # another caller is not held back by this one
        held.append(_hold(d.socket, request.replace(b"ruid=4242", b"ruid=4243")))
        assert _first_frame(held[-1]) == b"L"
    finally:
        for conn in held:
            conn.close()
        assert d.stop() == 0
