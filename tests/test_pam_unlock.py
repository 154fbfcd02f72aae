"""Signing in through real libpam with the real helper and the software key over UDP.

A user is enrolled with the library's own enroll against the software key (served from a thread of this process),
then pamtester (a separate process, the PIN on stdin) and python-pam (this process) sign in through a service file
that names pam_hmacunlock.so by absolute path.
"""

from __future__ import annotations

import os
import shutil
import socket

import pam
import pytest

from libhmacunlock.interaction import ScriptedInteraction
from tests.fixtures import syslog
from tests.fixtures.pam_signin import USER, WRONG_PIN, line
from tests.fixtures.softkey import TEST_PIN
from tests.pam.stack import NOUSEROK_CONTROL, module_line, pam_service, pamtester, python_pam, record_settled

pytestmark = pytest.mark.root


def test_the_right_pin_signs_in_and_rotates_the_salt(served_key, enrolled):
    record = enrolled / f"{USER}.json"
    before = record.read_bytes()
    with pam_service(line(served_key, enrolled, "cue")) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
        assert run.ok, run.output
        assert "Security key PIN:" in run.output and "Touch your security key" in run.output
        record_settled(enrolled, USER)  # the rotated record is written after the verdict
        assert record.read_bytes() != before  # the helper ran as root and rewrapped under a new salt
        outcome = python_pam(service, USER, TEST_PIN)  # in-process: the host interpreter survives
        assert outcome.ok and outcome.code == pam.PAM_SUCCESS


def test_a_wrong_pin_fails_and_shows_the_attempts_left(served_key, enrolled):
    with pam_service(line(served_key, enrolled, max_tries=1)) as service:
        run = pamtester(service, USER, WRONG_PIN + "\n")
        assert not run.ok and "attempts left" in run.output
        outcome = python_pam(service, USER, WRONG_PIN)
        assert outcome.code == pam.PAM_AUTH_ERR and "attempts left" in outcome.output


def test_a_wrong_pin_then_the_right_one_in_one_sign_in(served_key, enrolled):
    with pam_service(line(served_key, enrolled, max_tries=2)) as service:
        run = pamtester(service, USER, f"{WRONG_PIN}\n{TEST_PIN}\n")
        assert run.ok and "attempts left" in run.output


def test_cue_prompt_replaces_the_touch_message(served_key, enrolled):
    custom = "[cue_prompt=Tap the key now] cue"
    with pam_service(line(served_key, enrolled) + " " + custom) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
        assert run.ok and "Tap the key now" in run.output and "Touch your security key" not in run.output


def test_without_cue_there_is_no_touch_message(served_key, enrolled):
    with pam_service(line(served_key, enrolled)) as service:
        run = pamtester(service, USER, TEST_PIN + "\n")
        assert run.ok and "Touch" not in run.output


def test_a_user_not_enrolled_fails(served_key, enrolled):
    with pam_service(line(served_key, enrolled)) as service:
        outcome = python_pam(service, "hmu-test-nobody", TEST_PIN)
        assert not outcome.ok and outcome.code == pam.PAM_AUTHINFO_UNAVAIL


@pytest.mark.parametrize("fallback, expected", [("pam_permit.so", True), ("pam_deny.so", False)])
def test_nouserok_passes_a_user_not_enrolled_to_the_fallback_without_asking(served_key, enrolled, fallback, expected):
    with pam_service(
        line(served_key, enrolled, "nouserok", control=NOUSEROK_CONTROL), f"auth required {fallback}"
    ) as service:
        run = pamtester(service, "hmu-test-nobody")
        assert run.ok is expected and "PIN" not in run.output
        # An enrolled user is still this module's: a wrong PIN is not passed on.
        wrong = python_pam(service, USER, WRONG_PIN)
        assert not wrong.ok and wrong.code == pam.PAM_AUTH_ERR


def test_no_key_reachable_fails(enrolled):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens once closed
    with pam_service(module_line("required", store=enrolled, device=f"udp:127.0.0.1:{port}")) as service:
        run = pamtester(service, USER, TEST_PIN + "\n", timeout=60)  # bounded: the test fails if it hangs
        assert not run.ok
        outcome = python_pam(service, USER, TEST_PIN)
        assert outcome.code == pam.PAM_AUTHINFO_UNAVAIL


def _symlink_record(store):
    record = store / f"{USER}.json"
    target = store.parent / "elsewhere.json"
    shutil.copy2(record, target)
    record.unlink()
    record.symlink_to(target)


def _group_writable_record(store):
    os.chmod(store / f"{USER}.json", 0o660)


def _garbled_record(store):
    (store / f"{USER}.json").write_text("{not json")


@pytest.mark.parametrize("damage", [_symlink_record, _group_writable_record, _garbled_record])
def test_an_unsafe_or_broken_record_is_refused_even_with_nouserok(served_key, enrolled, damage):
    # CVE-2019-12209 (planted files) and CVE-2020-24612 (nouserok skipping a broken record) classes.
    damage(enrolled)
    with pam_service(
        line(served_key, enrolled, "nouserok", control=NOUSEROK_CONTROL), "auth required pam_permit.so"
    ) as service:
        outcome = python_pam(service, USER, TEST_PIN)
        assert not outcome.ok and outcome.code == pam.PAM_AUTH_ERR


def test_a_profile_that_does_not_open_is_reported_and_the_sign_in_stands(served_key, enrolled, tmp_path):
    not_encrypted = tmp_path / "profile"
    not_encrypted.mkdir()
    with pam_service(line(served_key, enrolled, profile=not_encrypted)) as service:
        outcome = python_pam(service, USER, TEST_PIN)
        assert outcome.ok and "profile was not unlocked" in outcome.output


def test_debug_logs_the_steps_to_syslog_and_never_the_pin(served_key, enrolled):
    with syslog.listening() as log:
        if log is None:
            pytest.skip("something else (a syslog daemon) owns /dev/log here; this test needs to listen there itself")
        with pam_service(line(served_key, enrolled, "debug", max_tries=2)) as service:
            run = pamtester(service, USER, f"{WRONG_PIN}\n{TEST_PIN}\n")
        log.settle()
        text = log.text(service).encode()  # other programs may log meanwhile
    assert run.ok
    assert b"helper: timing: unlocked" in text and b"wrong PIN, attempt 1 of 2" in text
    assert TEST_PIN.encode() not in text and WRONG_PIN.encode() not in text


def test_a_sign_in_with_profile_unlocks_the_users_fscrypt_directory(served_key, enrolled, tmp_path):
    from libhmacunlock.targets import fscrypt
    from libhmacunlock.unlock import unlock
    from tests.fixtures.fscrypt import loop_ext4

    with loop_ext4(tmp_path) as mnt:
        profile = mnt / USER
        profile.mkdir()
        unlock_key = unlock(str(enrolled), served_key.spec, ScriptedInteraction([TEST_PIN]), user=USER).unlock_key
        fscrypt.setup_profile(str(profile), unlock_key)
        (profile / "notes.txt").write_bytes(b"the plane lands at 11:35\n")
        assert fscrypt.lock_profile(str(profile)) is fscrypt.Status.LOCKED
        with pam_service(line(served_key, enrolled, profile=profile)) as service:
            run = pamtester(service, USER, TEST_PIN + "\n")
        assert run.ok, run.output
        assert fscrypt.profile_status(str(profile)) is fscrypt.Status.UNLOCKED
        assert (profile / "notes.txt").read_bytes() == b"the plane lands at 11:35\n"
        fscrypt.lock_profile(str(profile))
    from libhmacunlock import sessions

    (sessions.RUN_DIR / f"{USER}.json").unlink(missing_ok=True)  # what the sign-in noted it unlocked (lock_on_logout)
