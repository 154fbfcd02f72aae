"""The PIN guard through real libpam with the software key (issue 12): nobody without the key in hand can lock it.

Every test reads the key's own retry counter before and after (the software key's state: what the key itself would
answer to getPinRetries): a sign-in that a check could have stopped spends no attempt.
"""

from __future__ import annotations

import json
import socket
import time

import pam
import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin

from libhmacunlock.enroll import enroll
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.presence import PresencePolicy
from libhmacunlock.softkey.udp import running_udp_softkey
from tests.fixtures.softkey import TEST_PIN
from tests.pam.stack import module_line, pam_service, pamtester, python_pam, record_settled, require_pam

pytestmark = pytest.mark.root

USER = "hmu-test-guard"
WRONG_PIN = "135799"
PROMPT = "Security key PIN:"


def retries(server) -> int:
    return server.authenticator.state.pin_retries


def _set_pin(server) -> None:
    ClientPin(Ctap2(SoftKeyDevice(server.authenticator))).set_pin(TEST_PIN)


@pytest.fixture
def served_key(udp_softkey):
    require_pam()
    _set_pin(udp_softkey)
    return udp_softkey


@pytest.fixture
def enrolled(tmp_path, served_key):
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    enroll(str(path), served_key.spec, ScriptedInteraction([TEST_PIN]), USER)
    return path


def line(key, store, *flags, **options):
    return module_line("required", *flags, store=store, device=key.spec, **options)


def _time_passes(store, user=USER) -> None:
    """What waiting out the throttle would do, without waiting (no timing in tests): the last failure is old."""
    path = store / f".{user}.throttle"
    if path.exists():
        state = json.loads(path.read_text())
        path.write_text(json.dumps({**state, "last": time.time() - 3600}))


@pytest.mark.parametrize("typed, says", [("", "No PIN was entered"), ("123", "too short"), ("8" * 64, "too long")])
def test_an_empty_short_or_long_pin_is_refused_without_spending_an_attempt(served_key, enrolled, typed, says):
    before = retries(served_key)
    with pam_service(line(served_key, enrolled)) as service:
        run = pamtester(service, USER, typed + "\n")
    assert not run.ok and says in run.output and "no PIN attempt was used" in run.output
    assert retries(served_key) == before == 8


def test_a_user_not_enrolled_is_not_asked_for_a_pin(served_key, enrolled):
    with pam_service(line(served_key, enrolled)) as service:
        run = pamtester(service, "hmu-test-nobody", TEST_PIN + "\n")
        outcome = python_pam(service, "hmu-test-nobody", TEST_PIN)
    assert not run.ok and PROMPT not in run.output and "not enrolled" in run.output
    assert outcome.code == pam.PAM_AUTHINFO_UNAVAIL
    assert retries(served_key) == 8


def test_no_key_is_not_asked_for_a_pin(served_key, enrolled):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once closed
    with pam_service(module_line("required", store=enrolled, device=f"udp:127.0.0.1:{port}")) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert not run.ok and PROMPT not in run.output
    assert retries(served_key) == 8


def test_a_key_without_the_users_credential_is_not_asked_for_a_pin(served_key, enrolled, tmp_path):
    with running_udp_softkey(tmp_path / "stranger.json") as stranger:  # someone else's key, plugged in
        _set_pin(stranger)
        with pam_service(module_line("required", store=enrolled, device=stranger.spec)) as service:
            run = pamtester(service, USER, TEST_PIN + "\n")
        assert retries(stranger) == 8
    assert not run.ok and PROMPT not in run.output
    assert f"No security key holding {USER}'s credential" in run.output
    assert retries(served_key) == 8


def test_a_cred_protect_3_slot_is_named_and_not_asked_for_a_pin(served_key, tmp_path, monkeypatch):
    """A slot an older version enrolled with credProtect 3 hides from the probe: PAM asks no PIN and says why."""
    import libhmacunlock.enroll as enroll_module

    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    with monkeypatch.context() as m:  # the level check of today switched off: the record as an older version wrote it
        m.setattr(enroll_module, "check_cred_protect", lambda level: None)
        enroll(str(path), served_key.spec, ScriptedInteraction([TEST_PIN]), USER, cred_protect=3)
    with pam_service(line(served_key, path)) as service:
        run = pamtester(service, USER, WRONG_PIN + "\n")
    assert not run.ok and PROMPT not in run.output
    assert "credProtect 3" in run.output and "No PIN was asked" in run.output, run.output
    assert retries(served_key) == 8


def test_a_bad_device_spec_is_not_asked_for_a_pin(served_key, enrolled):
    with pam_service(module_line("required", store=enrolled, device="usb:first")) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert not run.ok and PROMPT not in run.output and "Not a device spec" in run.output
    assert retries(served_key) == 8


def test_touch_first_with_presence_denied_spends_no_attempt(served_key, enrolled):
    served_key.authenticator.presence = PresencePolicy.deny()
    with pam_service(line(served_key, enrolled, "touch_first")) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert not run.ok and PROMPT not in run.output
    assert "costs one more touch" in run.output and "refused" in run.output
    assert retries(served_key) == 8


def test_touch_first_with_the_touch_given_signs_in(served_key, enrolled):
    before = dict(served_key.authenticator.message_counts)
    with pam_service(line(served_key, enrolled, "touch_first")) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert run.ok, run.output
    assert served_key.authenticator.message_counts[0x0B] - before.get(0x0B, 0) == 1  # authenticatorSelection


def test_the_default_never_soft_locks_the_key_in_one_sign_in(served_key, enrolled):
    with pam_service(line(served_key, enrolled)) as service:
        run = pamtester(service, USER, f"{WRONG_PIN}\n{WRONG_PIN}\n{WRONG_PIN}\n")
    assert not run.ok and run.output.count(PROMPT) == 2  # max_tries defaults to 2: three in a row would lock it
    assert retries(served_key) == 6 and not served_key.authenticator.pin.mismatches >= 3


def test_wrong_pins_in_a_loop_stop_at_the_floor(served_key, enrolled):
    floor = 3
    seen = []
    with pam_service(line(served_key, enrolled)) as service:
        for _ in range(8):
            served_key.power_cycle()  # the worst case: somebody replugs the key between the attacker's tries
            _time_passes(enrolled)
            outcome = python_pam(service, USER, WRONG_PIN)
            assert not outcome.ok
            seen.append(retries(served_key))
        assert min(seen) == floor and retries(served_key) == floor  # never below the floor
        assert "only 3 PIN attempts left" in outcome.output and "hmacunlock key verify-pin" in outcome.output


def test_failed_sign_ins_are_throttled_across_processes(served_key, enrolled):
    with pam_service(line(served_key, enrolled, max_tries=1)) as service:
        for _ in range(2):  # two failed sign-ins in a row, each its own pamtester and helper process
            assert not pamtester(service, USER, WRONG_PIN + "\n").ok
        assert retries(served_key) == 6
        state_file = enrolled / f".{USER}.throttle"
        assert json.loads(state_file.read_text())["failures"] == 2
        # the last failure "just now", however slow this machine ran the two sign-ins (no timing in tests):
        state_file.write_text(json.dumps({"failures": 2, "last": time.time()}))
        throttled = pamtester(service, USER, TEST_PIN + "\n")  # even the right PIN waits its turn
        assert not throttled.ok and PROMPT not in throttled.output and "try again in 1 s" in throttled.output
        assert retries(served_key) == 6
        _time_passes(enrolled)
        assert pamtester(service, USER, TEST_PIN + "\n").ok  # the right PIN clears the count
    record_settled(enrolled, USER)  # after the verdict, under the user's store lock
    assert json.loads((enrolled / f".{USER}.throttle").read_text())["failures"] == 0
    assert (enrolled / f".{USER}.throttle").stat().st_mode & 0o777 == 0o600
    assert retries(served_key) == 8


def _failures(store) -> int:
    path = store / f".{USER}.throttle"
    return json.loads(path.read_text())["failures"] if path.exists() else 0


def test_a_wrong_pin_is_charged_even_when_the_sign_in_ends_otherwise(served_key, enrolled):
    """The throttle counts each PIN as it is sent, not when the sign-in ends on a wrong one: a wrong PIN followed
    by a cancelled retry prompt (end of input) still counts, so a caller cannot loop wrong PINs for free."""
    with pam_service(line(served_key, enrolled, max_tries=2)) as service:
        run = pamtester(service, USER, WRONG_PIN + "\n")  # the retry prompt finds no input: cancelled
    assert not run.ok
    assert retries(served_key) == 7
    assert _failures(enrolled) == 1


def test_a_key_already_soft_locked_adds_no_failure(served_key, enrolled):
    """Sign-ins refused before any PIN is sent (here: the key is soft-locked) charge nothing, so an attacker who
    soft-locked the key cannot also run up the owner's waiting time."""
    client_pin = ClientPin(Ctap2(SoftKeyDevice(served_key.authenticator)))
    for _ in range(3):  # three wrong in a row: soft-locked until the key is replugged
        with pytest.raises(CtapError):
            client_pin.get_pin_token(WRONG_PIN)
    assert retries(served_key) == 5
    with pam_service(line(served_key, enrolled)) as service:
        for _ in range(3):
            assert not pamtester(service, USER, TEST_PIN + "\n").ok
    assert retries(served_key) == 5 and _failures(enrolled) == 0


def test_the_right_pin_at_the_floor_is_not_tried_by_pam(served_key, enrolled):
    served_key.authenticator.state.pin_retries = 3  # as a loop of wrong PINs leaves it (the test above)
    with pam_service(line(served_key, enrolled)) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
    assert not run.ok and PROMPT not in run.output and "only 3 PIN attempts left" in run.output
    assert retries(served_key) == 3


def test_concurrent_sign_ins_cannot_go_below_the_floor_together(served_key, enrolled):
    import concurrent.futures

    served_key.authenticator.state.pin_retries = 5
    with (
        pam_service(line(served_key, enrolled, max_tries=1)) as service,
        concurrent.futures.ThreadPoolExecutor(6) as pool,
    ):
        runs = list(pool.map(lambda _: pamtester(service, USER, WRONG_PIN + "\n"), range(6)))
    assert not any(r.ok for r in runs)
    assert retries(served_key) >= 3  # the floor is checked again, under the store's lock, right before each PIN


def test_a_relative_store_is_a_configuration_error(served_key, enrolled):
    with pam_service(module_line("required", store="store", device=served_key.spec)) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
        outcome = python_pam(service, USER, TEST_PIN)
    assert not run.ok and PROMPT not in run.output and outcome.code == pam.PAM_SYSTEM_ERR
    assert retries(served_key) == 8


@pytest.mark.parametrize("name", [f"{USER}\rroot", f"{USER}\x1b[2J", f"{USER}\x7f", f"{USER}\nroot"])
def test_a_user_name_with_a_control_character_is_refused(served_key, enrolled, name):
    with pam_service(line(served_key, enrolled)) as service:
        outcome = python_pam(service, name, TEST_PIN)
    assert outcome.code == pam.PAM_USER_UNKNOWN and PROMPT not in outcome.output
    assert retries(served_key) == 8
