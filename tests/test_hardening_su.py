"""Sign-ins through a setuid su-like PAM client (real uid an unprivileged test user, effective uid 0), as su and
sudo make them (issue 12): they rotate the salt, store the sign count and take the lock exactly like root's, a
clone with a lower counter is refused there too, and the caller's wrong PINs in a loop never take the victim's key
below the floor. Every test reads the key's own retry counter before and after. Also PAM_SILENT on a pty (sudo
before 1.9.16): the attempts left and the soft lock still reach the person.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from bench.ptyrun import run_on_pty
from libhmacunlock.softkey.udp import running_udp_softkey
from tests.fixtures.pam_signin import USER, WRONG_PIN, line
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.terminal import Terminal
from tests.pam.setuid import setuid_su_client
from tests.pam.stack import pam_service, record_settled

pytestmark = pytest.mark.root


@pytest.fixture
def su():
    with setuid_su_client() as client:
        yield client


def retries(server) -> int:
    return server.authenticator.state.pin_retries


def _slot(store) -> dict:
    return json.loads((store / f"{USER}.json").read_text())["slots"][0]


def _time_passes(store) -> None:
    """Waiting out the throttle without waiting (no timing in tests): the last failure is made old."""
    path = store / f".{USER}.throttle"
    if path.exists():
        path.write_text(json.dumps({**json.loads(path.read_text()), "last": time.time() - 3600}))


def test_a_sign_in_through_su_rotates_the_salt_and_stores_the_sign_count(served_key, enrolled, su):
    before = _slot(enrolled)
    with pam_service(line(served_key, enrolled)) as service:
        run = su.run(service, USER, TEST_PIN + "\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ruid {su.uid} euid 0" in run.stdout  # really the su situation: the caller's real uid, euid 0
    assert "costs one more touch" in run.stdout + run.stderr  # touch_first=auto: the caller is not the user
    record_settled(enrolled, USER)
    after = _slot(enrolled)
    assert after["salt"] != before["salt"] and after["sign_count"] > before["sign_count"]
    assert (enrolled / f".{USER}.lock").stat().st_uid == 0
    assert retries(served_key) == 8


def test_a_clone_with_a_lower_counter_is_refused_through_su(served_key, enrolled, su, tmp_path):
    clone_state = tmp_path / "clone.json"
    shutil.copy(tmp_path / "softkey.json", clone_state)  # the served key's state (tests/fixtures/udp.py): a clone
    with pam_service(line(served_key, enrolled)) as service:
        for _ in range(2):  # the genuine key signs in twice through su: the stored counter moves past the clone's
            assert su.run(service, USER, TEST_PIN + "\n").returncode == 0
            record_settled(enrolled, USER)
    with running_udp_softkey(clone_state) as clone, pam_service(line(clone, enrolled)) as service:
        run = su.run(service, USER, TEST_PIN + "\n")
        assert retries(clone) == 8  # the right PIN: the clone's counter of attempts is not what refuses it
    assert run.returncode != 0 and "cloned" in run.stdout + run.stderr


def test_the_callers_wrong_pins_in_a_loop_stop_at_the_floor_and_verify_pin_restores_the_key(served_key, enrolled, su):
    seen = []
    with pam_service(line(served_key, enrolled)) as service:
        for _ in range(6):
            served_key.power_cycle()  # the worst case: the key is replugged between the caller's tries
            _time_passes(enrolled)
            assert su.run(service, USER, f"{WRONG_PIN}\n{WRONG_PIN}\n").returncode != 0
            seen.append(retries(served_key))
        assert min(seen) == 3 and retries(served_key) == 3  # never below pin_floor=3
        _time_passes(enrolled)
        refused = su.run(service, USER, TEST_PIN + "\n")  # the victim's right PIN: PAM does not try it at the floor
        assert refused.returncode != 0 and "verify-pin" in refused.stdout + refused.stderr
        assert retries(served_key) == 3
        # at the console, with the key in hand: a touch first, then the PIN restores the attempts
        term = Terminal(["key", "verify-pin", "--device", served_key.spec])
        term.expect(rb"Type 'yes' to go on: ")
        term.send("yes")
        term.expect(rb"PIN of the security key \(3 attempts left\): ")
        term.wait_echo_off()
        term.send(TEST_PIN)
        assert term.finish() == 0 and retries(served_key) == 8
        _time_passes(enrolled)
        assert su.run(service, USER, TEST_PIN + "\n").returncode == 0  # the right PIN works again through su


def test_under_pam_silent_the_attempts_left_and_the_soft_lock_reach_the_person(served_key, enrolled, su):
    """A sudo-like client (PAM_SILENT) on a real pty: PAM_TEXT_INFO is silenced, yet the person sees the attempts
    left (in the next prompt's text) and the soft lock (an error message)."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to start the setuid client on a pty with the test user's real ids")
    env = {"PATH": "/usr/bin:/bin"}
    with pam_service(line(served_key, enrolled, "touch_first=never")) as service:
        argv = ["setpriv", f"--reuid={su.uid}", f"--regid={su.gid}", "--clear-groups", *su.argv(service, USER, True)]
        first = run_on_pty(argv, [WRONG_PIN, WRONG_PIN], env=env, timeout=60).text()
        assert "Wrong PIN: 7 attempts left" in first and "Wrong PIN: 6 attempts left" in first, first
        assert retries(served_key) == 6
        _time_passes(enrolled)
        third = run_on_pty(argv, [WRONG_PIN], env=env, timeout=60).text()  # three in a row: the key soft-locks
    assert "unplug the security key and plug it back in" in third, third
    assert retries(served_key) == 5
