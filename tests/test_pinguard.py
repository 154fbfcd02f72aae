"""The PIN guard in the library and the CLI (issue 12): checks before any PIN is asked or sent; the floor; the
throttle's schedule; `hmacunlock key verify-pin` (a touch first) on a real pty. PAM: test_hardening_pin_guard.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from libhmacunlock.device import Key, check_pin
from libhmacunlock.errors import NoKeyHoldsCredential, PinFloorReached, PinMalformed, SignInThrottled, WrongPin
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.throttle import CAP_S, delay_after
from libhmacunlock.unlock import unlock
from tests.fixtures.library import (
    CLIENT_PIN,
    GET_ASSERTION,
    GET_INFO,
    delta,
    enroll_user,
    messages,
    pin,
    second_softkey,
)
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.terminal import Terminal


@pytest.mark.parametrize(
    "typed, ok",
    [("", False), ("123", False), ("ééé", False), ("éééé", True), ("1234", True), ("x" * 63, True), ("x" * 64, False)],
)
def test_pins_no_key_accepts_are_refused_locally(typed, ok):
    # code points count for the minimum ("ééé" is 3), UTF-8 bytes for the maximum
    if ok:
        assert check_pin(typed) == typed
    else:
        with pytest.raises(PinMalformed, match="not sent to the security key"):
            check_pin(typed)


def test_a_pin_of_few_code_points_but_too_many_bytes_is_refused():
    with pytest.raises(PinMalformed, match="too long"):
        check_pin("é" * 32)  # 32 code points, 64 bytes


def test_a_short_pin_sends_nothing_to_the_key(store, key, pinned_softkey_device):
    enroll_user(store, key, "alice")
    before = messages(pinned_softkey_device)
    with pytest.raises(PinMalformed):
        unlock(store, key, ScriptedInteraction(["12"]), user="alice")
    # only the key agreement fetched before the prompt (while the person types); no PIN token was asked for
    assert delta(before, messages(pinned_softkey_device)).get(CLIENT_PIN) == 1
    assert pinned_softkey_device.authenticator.state.pin_retries == 8


def test_a_key_without_the_credential_is_found_out_before_the_prompt(store, key, tmp_path):
    enroll_user(store, key, "alice")
    asked = pin()
    with pytest.raises(NoKeyHoldsCredential, match="No security key holding alice's credential"):
        unlock(store, second_softkey(tmp_path), asked, user="alice")
    assert asked.asked == []


def test_at_the_floor_nobody_is_asked_and_above_it_the_pin_works(store, key, pinned_softkey_device):
    enroll_user(store, key, "alice")
    state = pinned_softkey_device.authenticator.state
    state.pin_retries = 3
    asked = pin()
    with pytest.raises(PinFloorReached) as err:
        unlock(store, key, asked, user="alice", pin_floor=3)
    assert asked.asked == [] and err.value.attempts_left == 3 and "verify-pin" in err.value.message
    assert unlock(store, key, pin(), user="alice", pin_floor=2).unlock_key  # the caller's floor decides
    assert state.pin_retries == 8


class _SignInMeanwhile(ScriptedInteraction):
    """Answers the PIN prompt after another sign-in (its own Key on the same key) sent a wrong PIN meanwhile."""

    def __init__(self, other) -> None:
        super().__init__([WRONG_PIN])
        self.other = other

    def ask_pin(self, purpose, key_label=None, attempts_left=None):
        self.other()
        return super().ask_pin(purpose, key_label, attempts_left)


WRONG_PIN = "9999"


def test_a_pin_sent_by_another_sign_in_since_the_first_read_makes_the_guard_read_again(
    store, key, pinned_softkey_device
):
    # 4 attempts left, floor 3: both sign-ins pass the first read; the other one's wrong PIN leaves 3, so this one's
    # must not be sent (skipping the second read would spend it and leave 2)
    enroll_user(store, key, "alice")
    state = pinned_softkey_device.authenticator.state
    state.pin_retries = 4

    def other() -> None:
        with pytest.raises(WrongPin):
            unlock(
                store,
                Key.from_device(pinned_softkey_device),
                ScriptedInteraction([WRONG_PIN]),
                user="alice",
                pin_floor=3,
            )

    before = messages(pinned_softkey_device)
    with pytest.raises(PinFloorReached):
        unlock(store, key, _SignInMeanwhile(other), user="alice", pin_floor=3)
    assert state.pin_retries == 3
    # this sign-in: probe, getPinRetries, agreement, then under the lock the agreement again (the other's wrong PIN
    # renewed it) and getPinRetries again (the floor refused the token); the other one (its own Key: getInfo): probe,
    # getPinRetries, agreement, token (its second read skipped: nothing was sent), getPinRetries for WrongPin's count
    assert delta(before, messages(pinned_softkey_device)) == {GET_INFO: 1, GET_ASSERTION: 2, CLIENT_PIN: 8}


def test_with_no_pin_sent_since_the_first_read_the_attempts_are_read_once(store, key, pinned_softkey_device):
    enroll_user(store, key, "alice")
    before = messages(pinned_softkey_device)
    assert unlock(store, key, pin(), user="alice", pin_floor=3).unlock_key
    # probe, getPinRetries, agreement, token, assertion
    assert delta(before, messages(pinned_softkey_device)) == {GET_ASSERTION: 2, CLIENT_PIN: 3}


def test_a_pin_lock_file_without_a_generation_makes_the_guard_read_again(store, key, pinned_softkey_device):
    enroll_user(store, key, "alice")
    (store.path / ".pin.lock").write_bytes(b"odd")  # not a generation: unknown, so read again (fail safe)
    before = messages(pinned_softkey_device)
    assert unlock(store, key, pin(), user="alice", pin_floor=3).unlock_key
    # probe, getPinRetries, agreement, and under the lock the agreement and getPinRetries again, token, assertion
    assert delta(before, messages(pinned_softkey_device)) == {GET_ASSERTION: 2, CLIENT_PIN: 5}
    assert len((store.path / ".pin.lock").read_bytes()) == 8  # the sent PIN counted: a generation again


def test_the_throttle_doubles_up_to_a_cap():
    assert [delay_after(n) for n in range(7)] == [0, 0, 1, 2, 4, 8, 16]
    assert delay_after(40) == CAP_S == 900


def test_on_a_full_disk_the_throttle_keeps_its_count_and_never_fails_a_sign_in(tmp_path):
    from libhmacunlock.store import Store
    from libhmacunlock.throttle import Throttle
    from tests.fixtures.full_disk import fill, tiny_tmpfs

    with tiny_tmpfs(tmp_path / "small") as small:
        store = Store(small / "store")
        store.path.mkdir(mode=0o700)
        throttle, fresh = Throttle(store, "alice"), Throttle(store, "bob")
        for i in range(3):
            throttle.charge(now=1000.0 + 100 * i)  # each after the last one's wait
        filler = fill(small)
        throttle.charge(now=1300.0)  # rewritten in place: no new space needed
        fresh.charge(now=1300.0)  # a new file cannot be written: nothing recorded, no error
        with pytest.raises(SignInThrottled, match="try again in 4 s"):
            throttle.check(now=1300.0)
        fresh.check(now=1300.0)
        throttle.succeeded()
        throttle.check(now=1300.0)
        filler.unlink()


def _blocked_on(path) -> bool:
    """Some process or thread waits for a flock on `path` (/proc/locks lists a blocked request with '->')."""
    inode = os.stat(path).st_ino
    with open("/proc/locks") as locks:
        return any("->" in line and f":{inode} " in line for line in locks)


def test_a_charge_waits_for_another_charge_and_counts_after_it(tmp_path):
    """Two sign-ins charging at once: the check and the charge are one step under the file's lock, so the second
    one sees the first one's count (here: enough failures to wait) and is refused, rather than both passing the
    check before either counts."""
    import fcntl
    import json
    import threading

    from libhmacunlock.store import Store
    from libhmacunlock.throttle import Throttle

    store = Store(tmp_path / "store")
    store.path.mkdir(mode=0o700)
    throttle = Throttle(store, "alice")
    throttle.charge(now=1000.0)  # one failure: the next PIN waits for nothing
    path = store.path / ".alice.throttle"
    other = os.open(path, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)  # another sign-in in the middle of its charge
    outcome: list[BaseException | None] = []

    def charge() -> None:
        try:
            throttle.charge(now=1000.0)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=charge)
    thread.start()
    deadline = time.monotonic() + 30
    while not _blocked_on(path):
        assert thread.is_alive() and time.monotonic() < deadline, "the charge did not wait for the lock"
        time.sleep(0.001)
    data = json.dumps({"failures": 2, "last": 1000.0}).encode()  # the other one counts its PIN
    os.pwrite(other, data, 0)
    os.ftruncate(other, len(data))
    os.close(other)  # and lets go
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], SignInThrottled), outcome
    assert json.loads(path.read_text())["failures"] == 2  # refused, and not counted


def test_a_charge_while_a_wait_lasts_is_refused_and_counts_nothing(tmp_path):
    """Checking the count and adding the PIN to it are one step under the file's lock: a PIN charged while the last
    failure's wait lasts (another sign-in failed since this one's first check) is refused, and not counted."""
    import json

    from libhmacunlock.store import Store
    from libhmacunlock.throttle import Throttle

    store = Store(tmp_path / "store")
    store.path.mkdir(mode=0o700)
    throttle = Throttle(store, "alice")
    throttle.charge(now=1000.0)
    throttle.charge(now=1000.0)  # the first failure waits for nothing; the next PIN waits 1 s
    with pytest.raises(SignInThrottled, match="try again in 1 s"):
        throttle.charge(now=1000.5)
    assert json.loads((store.path / ".alice.throttle").read_text())["failures"] == 2
    throttle.charge(now=1001.0)
    assert json.loads((store.path / ".alice.throttle").read_text())["failures"] == 3


def _cli(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hmacunlock_cli", *argv], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def served(udp_softkey, store):
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    ClientPin(Ctap2(SoftKeyDevice(udp_softkey.authenticator))).set_pin(TEST_PIN)
    enroll_user(store, udp_softkey.spec, "alice")
    udp_softkey.authenticator.state.pin_retries = 3
    return udp_softkey


def test_the_cli_goes_below_the_floor_only_at_a_terminal_after_yes(served, store):
    args = ["unlock", "alice", "--device", served.spec, "--store", str(store.path)]
    scripted = _cli(*args, stdin=TEST_PIN + "\n")
    assert scripted.returncode == 4 and "only 3 PIN attempts left" in scripted.stderr  # no terminal: refused
    assert served.authenticator.state.pin_retries == 3
    term = Terminal(args)
    term.expect(rb"Type 'yes' to go on: ")
    term.send("no")
    assert term.finish() == 4 and served.authenticator.state.pin_retries == 3
    term = Terminal(args)
    term.expect(rb"Type 'yes' to go on: ")
    term.send("yes")
    term.expect(rb"PIN.*: ")
    term.wait_echo_off()
    term.send(TEST_PIN)
    assert term.finish() == 0 and b"unlocked alice" in term.output
    assert served.authenticator.state.pin_retries == 8


def test_verify_pin_asks_for_a_touch_first_and_the_right_pin_restores_the_attempts(served):
    from libhmacunlock.softkey.presence import PresencePolicy

    served.authenticator.state.pin_retries = 5
    served.authenticator.presence = PresencePolicy.deny()
    term = Terminal(["key", "verify-pin", "--device", served.spec])
    assert term.finish() == 10 and b"5 PIN attempts left" in term.output and b"Touch your security key" in term.output
    assert served.authenticator.state.pin_retries == 5  # no touch: no PIN asked, none spent
    served.authenticator.presence = PresencePolicy.approve()
    term = Terminal(["key", "verify-pin", "--device", served.spec])
    term.expect(rb"PIN of the security key \(5 attempts left\): ")
    term.wait_echo_off()
    term.send(TEST_PIN)
    assert term.finish() == 0 and b"PIN verified (8 attempts left)" in term.output
    assert served.authenticator.state.pin_retries == 8
