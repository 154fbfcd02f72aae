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
