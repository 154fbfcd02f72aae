"""Issue 16, the audit trail: enroll, remove, recovery use and PIN failures reach syslog (facility authpriv)
through the real `hmacunlock` command and the software key, and no line holds a secret."""

from __future__ import annotations

import secrets
import syslog as syslog_module

import pytest

from libhmacunlock import audit
from libhmacunlock.errors import ExitCode
from tests.cli_run import run
from tests.fixtures import syslog
from tests.fixtures.softkey import TEST_PIN

PIN = TEST_PIN + "\n"
WRONG_PIN = "13579135"
AUTHPRIV_NOTICE = syslog_module.LOG_AUTHPRIV | syslog_module.LOG_NOTICE
AUTHPRIV_WARNING = syslog_module.LOG_AUTHPRIV | syslog_module.LOG_WARNING
AUTHPRIV_ERR = syslog_module.LOG_AUTHPRIV | syslog_module.LOG_ERR
AUTHPRIV_ALERT = syslog_module.LOG_AUTHPRIV | syslog_module.LOG_ALERT


@pytest.fixture
def log():
    with syslog.listening() as listener:
        if listener is None:
            pytest.skip("/dev/log is held by something else (a syslog daemon or another test); this test listens there")
        yield listener


def lines(log: syslog.Syslog, user: str) -> list[str]:
    log.settle()
    return [line for line in log.text(f"user={user}").splitlines() if "hmacunlock[" in line]


def test_enroll_wrong_pin_and_recovery_unlock_are_logged_to_authpriv_without_a_secret(log, udp_softkey, tmp_path):
    user = "audit" + secrets.token_hex(4)  # other runs on this machine log here too
    spec, store = udp_softkey.spec, str(tmp_path / "store")
    run("key", "set-pin", "--device", spec, stdin=PIN)
    enrolled = run("enroll", user, "--device", spec, "--store", store, stdin=PIN).stdout
    credential = enrolled.split("credential ")[1].rstrip(")\n")
    wrong = run("unlock", user, "--device", spec, "--store", store, stdin=WRONG_PIN + "\n", ok=False)
    assert wrong.returncode == ExitCode.WRONG_PIN
    added = run("recovery", "add", user, "--device", spec, "--store", store, stdin=PIN).stdout
    recovery_key = added.rstrip("\n").splitlines()[-1]
    run("recovery", "unlock", user, "--store", store, stdin=recovery_key + "\n")
    run("recovery", "unlock", user, "--store", store, stdin="AAAA" * 9 + "\n", ok=False)

    got = lines(log, user)
    text = "\n".join(got)
    assert f"<{AUTHPRIV_NOTICE}>" in got[0] and f"enroll user={user} credential={credential}" in got[0], text
    assert any(f"<{AUTHPRIV_WARNING}>" in line and f"pin-failure user={user} error=WrongPin" in line for line in got)
    assert any(f"recovery-add user={user} slot=" in line and "kind=key" in line for line in got), text
    assert any(line.endswith(f"recovery-unlock user={user}") for line in got), text
    assert any(f"recovery-unlock-failed user={user} error=" in line for line in got), text
    assert len(got) == 5, text  # one line each: nothing logged twice
    for secret in (TEST_PIN, WRONG_PIN, recovery_key, recovery_key.replace("-", "")):
        assert secret not in text


def test_remove_and_recovery_remove_are_logged(log, udp_softkey, tmp_path):
    user = "audit" + secrets.token_hex(4)
    spec, store = udp_softkey.spec, str(tmp_path / "store")
    run("key", "set-pin", "--device", spec, stdin=PIN)
    credential = run("enroll", user, "--device", spec, "--store", store, stdin=PIN).stdout.split("credential ")[1]
    credential = credential.rstrip(")\n")
    added = run("recovery", "add", user, "--device", spec, "--store", store, stdin=PIN).stdout
    slot = added.split("(slot ")[1].split(")")[0]
    run("recovery", "remove", user, slot, "--store", store, "--yes")
    run("remove", user, "--credential", credential, "--store", store, "--yes")
    run("remove", user, "--store", store, "--yes")
    text = "\n".join(lines(log, user))
    assert f"recovery-remove user={user} slot={slot}" in text
    assert f"remove user={user} credential={credential}" in text
    assert f"remove-user user={user}" in text
    assert text.count("recovery-remove") == 1 and text.count("remove-user") == 1


def test_verbose_prints_the_audit_line_to_stderr(udp_softkey, tmp_path):
    user = "audit" + secrets.token_hex(4)
    spec, store = udp_softkey.spec, str(tmp_path / "store")
    run("key", "set-pin", "--device", spec, stdin=PIN)
    run("enroll", user, "--device", spec, "--store", store, stdin=PIN)
    wrong = run("-v", "unlock", user, "--device", spec, "--store", store, stdin=WRONG_PIN + "\n", ok=False)
    assert f"hmacunlock: audit: pin-failure user={user} error=WrongPin" in wrong.stderr
    assert WRONG_PIN not in wrong.stderr
    quiet = run("unlock", user, "--device", spec, "--store", store, stdin=WRONG_PIN + "\n", ok=False)
    assert "audit:" not in quiet.stderr


def test_user_names_are_written_with_control_characters_escaped():
    assert audit.clean("mallory\nhmacunlock[1]: enroll user=root") == "mallory\\x0ahmacunlock[1]: enroll user=root"
    assert audit.clean("a\x1b[2Jb\x7f\x9b\\") == "a\\x1b[2Jb\\x7f\\x9b\\\\"


def test_a_wrong_pin_at_a_pam_sign_in_is_logged_with_via_pam(log, served_key, enrolled):
    from tests.fixtures.pam_signin import USER, line
    from tests.fixtures.pam_signin import WRONG_PIN as PAM_WRONG_PIN
    from tests.pam.stack import pam_service, pamtester

    with pam_service(line(served_key, enrolled, max_tries=2)) as service:
        signed_in = pamtester(service, USER, f"{PAM_WRONG_PIN}\n{TEST_PIN}\n")
    assert signed_in.ok
    got = [line for line in lines(log, USER) if "via=pam" in line]  # other runs may sign USER in here too: >= 1
    assert any(f"<{AUTHPRIV_WARNING}>" in x and f"pin-failure user={USER} error=WrongPin" in x for x in got), got
    assert not any(TEST_PIN in x or PAM_WRONG_PIN in x for x in got)


# --- the PIN locks at a PAM sign-in: serve's failure branch logs the final failure ---------------------------------


@pytest.mark.parametrize(
    ("lock", "error"),
    [("blocked", "PinBlocked"), ("at the floor", "PinFloorReached"), ("three wrong in a row", "PinSoftLocked")],
)
def test_a_pin_lock_at_a_pam_sign_in_is_logged_with_via_pam(log, served_key, enrolled, lock, error):
    from tests.fixtures.pam_signin import USER, line
    from tests.pam.stack import pam_service, pamtester

    if lock == "blocked":
        served_key.authenticator.state.pin_retries = 0
    elif lock == "at the floor":
        served_key.authenticator.state.pin_retries = 2  # pin_floor's default is 3
    else:
        served_key.authenticator.pin.mismatches = 3  # the key wants a replug
    retries = served_key.authenticator.state.pin_retries
    with pam_service(line(served_key, enrolled)) as service:
        outcome = pamtester(service, USER, f"{TEST_PIN}\n")
    assert not outcome.ok
    assert served_key.authenticator.state.pin_retries == retries  # refused before the PIN reached the key
    every = lines(log, USER)
    got = [x for x in every if f"pin-failure user={USER} error={error}" in x and "via=pam" in x]
    assert got and all(f"<{AUTHPRIV_WARNING}>" in x for x in got), every
    assert not any(TEST_PIN in x for x in every)


def test_each_wrong_pin_and_the_throttled_third_of_a_pam_sign_in_are_logged_once(log, served_key, enrolled):
    from tests.fixtures.pam_signin import USER, line
    from tests.fixtures.pam_signin import WRONG_PIN as PAM_WRONG_PIN
    from tests.pam.stack import pam_service, pamtester

    with pam_service(line(served_key, enrolled, max_tries=3)) as service:
        outcome = pamtester(service, USER, f"{PAM_WRONG_PIN}\n" * 3)
    assert not outcome.ok
    every = [x for x in lines(log, USER) if "via=pam" in x]
    # other runs may sign USER in here too: count only this key's attempts (7 and 6 left), and the refusal
    assert len([x for x in every if "error=WrongPin attempts_left=7 " in x]) >= 1, every
    assert len([x for x in every if "error=WrongPin attempts_left=6 " in x]) >= 1, every
    assert any(f"pin-failure user={USER} error=SignInThrottled wait_s=" in x for x in every), every
    assert not any(PAM_WRONG_PIN in x or TEST_PIN in x for x in every)


# --- clone detection and the salt rotation's write, through the CLI ------------------------------------------------


def test_a_cloned_key_is_logged_when_refused_and_when_only_warned(log, tmp_path):
    import shutil

    from libhmacunlock.softkey.udp import running_udp_softkey

    user = "audit" + secrets.token_hex(4)
    store, state, copy = str(tmp_path / "store"), tmp_path / "key.json", tmp_path / "clone.json"
    with running_udp_softkey(state) as key:
        run("key", "set-pin", "--device", key.spec, stdin=PIN)
        run("enroll", user, "--device", key.spec, "--store", store, stdin=PIN)
        shutil.copy(state, copy)  # a genuine clone: the same secrets, a counter that stays behind
        for _ in range(2):
            run("unlock", user, "--device", key.spec, "--store", store, stdin=PIN)
    with running_udp_softkey(copy) as clone:
        refused = run("unlock", user, "--device", clone.spec, "--store", store, stdin=PIN, ok=False)
        assert refused.returncode == ExitCode.VERIFY, refused.stderr
        run("unlock", user, "--device", clone.spec, "--store", store, "--warn-cloned", stdin=PIN)
    got = lines(log, user)
    text = "\n".join(got)
    refusal = [x for x in got if f"cloned-key-refused user={user} stored_count=" in x]
    warning = [x for x in got if f"cloned-key-warned user={user} stored_count=" in x]
    assert len(refusal) == 1 and f"<{AUTHPRIV_ALERT}>" in refusal[0], text
    assert len(warning) == 1 and f"<{AUTHPRIV_WARNING}>" in warning[0], text
    assert "seen_count=" in refusal[0] and TEST_PIN not in text


def test_a_salt_rotation_that_cannot_be_written_is_logged(log, udp_softkey, tmp_path):
    from tests.fixtures.full_disk import fill, tiny_tmpfs

    user = "audit" + secrets.token_hex(4)
    with tiny_tmpfs(tmp_path / "small") as small:
        store = str(small / "store")
        run("key", "set-pin", "--device", udp_softkey.spec, stdin=PIN)
        run("enroll", user, "--device", udp_softkey.spec, "--store", store, stdin=PIN)
        before = (small / "store" / f"{user}.json").read_bytes()
        filler = fill(small)
        ran = run("unlock", user, "--device", udp_softkey.spec, "--store", store, stdin=PIN)  # the sign-in stands
        assert f"unlocked {user}" in ran.stdout and "Could not write" in ran.stderr, ran.stderr
        assert (small / "store" / f"{user}.json").read_bytes() == before
        filler.unlink()
    got = [x for x in lines(log, user) if "salt-rotation-write-failed" in x]
    assert (
        len(got) == 1 and f"<{AUTHPRIV_ERR}>" in got[0] and got[0].endswith(f"salt-rotation-write-failed user={user}")
    )


def test_a_pam_sign_in_on_a_full_disk_succeeds_and_logs_the_salt_rotation_it_could_not_write(log, served_key, tmp_path):
    """Found by this test: the throttle's charge of the PIN (STORE/.USER.throttle) raised ENOSPC, and the sign-in
    with the right PIN failed as an internal error (PAM_SYSTEM_ERR)."""
    from libhmacunlock.enroll import enroll
    from libhmacunlock.interaction import ScriptedInteraction
    from tests.fixtures.full_disk import fill, tiny_tmpfs
    from tests.fixtures.pam_signin import USER, line
    from tests.pam.stack import pam_service, pamtester, record_settled

    with tiny_tmpfs(tmp_path / "small") as small:
        store = small / "store"
        store.mkdir(mode=0o700)
        enroll(str(store), served_key.spec, ScriptedInteraction([TEST_PIN]), USER)
        before = (store / f"{USER}.json").read_bytes()
        filler = fill(small)
        with pam_service(line(served_key, store)) as service:
            outcome = pamtester(service, USER, f"{TEST_PIN}\n")
        record_settled(store, USER)
        assert outcome.ok, outcome.output
        assert (store / f"{USER}.json").read_bytes() == before  # the old record, which still opens
        filler.unlink()
        with pam_service(line(served_key, store)) as service:
            assert pamtester(service, USER, f"{TEST_PIN}\n").ok
    got = [x for x in lines(log, USER) if f"salt-rotation-write-failed user={USER}" in x]
    assert got and all(f"<{AUTHPRIV_ERR}>" in x for x in got), got


# --- the destructive commands ------------------------------------------------------------------------------------


def test_luks_enroll_luks_remove_and_a_forced_removal_are_logged(log, udp_softkey, tmp_path):
    from tests.fixtures.luks import FIRST_PASSPHRASE, make_volume

    user = "audit" + secrets.token_hex(4)
    spec, store = udp_softkey.spec, str(tmp_path / "store")
    volume = make_volume(tmp_path / "vol.img")
    run("key", "set-pin", "--device", spec, stdin=PIN)
    credential = run("enroll", user, "--device", spec, "--store", store, stdin=PIN).stdout.split("credential ")[1]
    credential = credential.rstrip(")\n")
    run("luks", "enroll", volume.path, user, "--device", spec, "--store", store,
        stdin=PIN + FIRST_PASSPHRASE.decode() + "\n")  # fmt: skip
    run("remove", user, "--credential", credential, "--store", store, "--yes", "--force")  # the volume depended on it
    run("luks", "remove", volume.path, user, "--store", store, "--yes")
    text = "\n".join(lines(log, user))
    assert f"remove user={user} credential={credential} forced=yes" in text, text
    assert f"luks-enroll user={user} volume={volume.path} keyslot=1 token=hmacunlock" in text, text
    assert f"luks-remove user={user} volume={volume.path} keyslots=1 token=hmacunlock" in text, text
