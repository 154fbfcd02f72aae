"""pam_hmacunlock.so through real libpam, with stand-in helpers (tests/pam/fake_helper.py) for every way a helper
can fail: whatever the helper does wrong, the answer is a failure, never success and never PAM_IGNORE.

The real helper against the software key is tested in test_pam_unlock.py.
"""

from __future__ import annotations

import os
import re
import subprocess

import pam
import pytest

from tests.pam.stack import (
    NOUSEROK_CONTROL,
    fake_helper,
    inheritable_fd,
    module_line,
    pam_service,
    pamtester,
    python_pam,
    require_pam,
)

pytestmark = pytest.mark.root


@pytest.fixture
def helpers(tmp_path):
    require_pam()
    return lambda behaviour: fake_helper(tmp_path, behaviour)


def test_a_well_formed_success_verdict_and_clean_exit_signs_in(helpers):
    # The control for every test below: the harness can succeed, so their failures mean something.
    with pam_service(module_line(helper=helpers("success"))) as service:
        assert pamtester(service, "hmu-test-alice").ok
        assert python_pam(service, "hmu-test-alice", "x").code == pam.PAM_SUCCESS


BROKEN_HELPERS = [
    "crash",  # SIGSEGV before any verdict
    "killed_midway",  # SIGKILL after the PIN prompt
    "hang",  # never answers: timeout=2
    "hang_after_verdict",  # says success, then never closes the channel
    "close_then_hang",  # says success, closes, never exits
    "garbage",  # not the protocol at all
    "oversized",  # a frame longer than the protocol allows
    "eof",  # exits 0 without a verdict
    "lie",  # says success, exits 1
    "trailing",  # says success, then keeps talking
    "bad_verdict",  # a verdict code that does not exist
    "nul_verdict",  # a NUL inside the verdict
    "many_prompts",  # asks for secrets forever (python-pam answers every prompt)
]


@pytest.mark.parametrize("behaviour", BROKEN_HELPERS)
def test_a_broken_helper_is_a_system_error_never_success(helpers, behaviour):
    with pam_service(module_line(helper=helpers(behaviour), timeout=2)) as service:
        outcome = python_pam(service, "hmu-test-alice", "123456")
        assert not outcome.ok
        assert outcome.code == pam.PAM_SYSTEM_ERR
        run = pamtester(service, "hmu-test-alice", "123456\n", timeout=30)
        assert not run.ok
        if behaviour != "many_prompts":  # pamtester's input ends, so that helper gets a clean conv_failed
            assert "System error" in run.output


@pytest.mark.parametrize("behaviour", ["crash", "hang", "garbage", "lie"])
def test_nouserok_never_ignores_a_broken_helper(helpers, behaviour):
    # CVE-2025-23013 class: an error must not turn into PAM_IGNORE and let a permissive fallback decide.
    with pam_service(
        module_line(NOUSEROK_CONTROL, "nouserok", helper=helpers(behaviour), timeout=2), "auth required pam_permit.so"
    ) as service:
        outcome = python_pam(service, "hmu-test-alice", "123456")
        assert not outcome.ok and outcome.code == pam.PAM_SYSTEM_ERR


def test_a_helper_slow_to_exit_after_its_verdict_is_waited_for(helpers):
    # Reaping has its own deadline (not what is left of timeout=): a late clean exit still counts.
    with pam_service(module_line(helper=helpers("close_then_exit_late"), timeout=1)) as service:
        outcome = python_pam(service, "hmu-test-alice", "x")
        assert outcome.ok and outcome.code == pam.PAM_SUCCESS


@pytest.mark.parametrize(
    "verdict, code",
    [
        ("auth_err", pam.PAM_AUTH_ERR),
        ("authinfo_unavail", pam.PAM_AUTHINFO_UNAVAIL),
        ("user_unknown", pam.PAM_USER_UNKNOWN),  # without nouserok it is not ignored
    ],
)
def test_verdicts_map_to_pam_codes(helpers, verdict, code):
    with pam_service(module_line(helper=helpers(verdict))) as service:
        outcome = python_pam(service, "hmu-test-alice", "123456")
        assert not outcome.ok and outcome.code == code


@pytest.mark.parametrize("fallback, expected", [("pam_permit.so", True), ("pam_deny.so", False)])
def test_nouserok_user_unknown_lets_the_fallback_decide(helpers, fallback, expected):
    with pam_service(
        module_line(NOUSEROK_CONTROL, "nouserok", helper=helpers("user_unknown")), f"auth required {fallback}"
    ) as service:
        assert python_pam(service, "hmu-test-alice", "123456").ok is expected
        assert pamtester(service, "hmu-test-alice").ok is expected


def test_error_messages_reach_the_conversation(helpers):
    with pam_service(module_line(helper=helpers("auth_err"))) as service:
        outcome = python_pam(service, "hmu-test-alice", "123456")
        assert "fake: denied" in outcome.output
        assert "fake: denied" in pamtester(service, "hmu-test-alice").output


def test_the_pin_travels_from_the_conversation_to_the_helper(helpers):
    # pin_check wants the PIN that ends the user name; the wrong one gets the retry prompt, then fails.
    with pam_service(module_line(helper=helpers("pin_check"), max_tries=2)) as service:
        assert python_pam(service, "hmu-test-2468", "2468").ok
        assert not python_pam(service, "hmu-test-2468", "1357").ok
        right_second = pamtester(service, "hmu-test-2468", "1357\n2468\n")
        assert right_second.ok and "attempts left" in right_second.output
        assert not pamtester(service, "hmu-test-2468", "1357\n").ok  # input ends: conversation fails


def test_the_module_asks_for_a_pin_only_when_the_helper_does(helpers):
    # No early prompt: the helper first checks what would make a PIN pointless (issue 12: no record, no key, no
    # key holding the credential, a key at its floor), so a helper that answers without asking shows no prompt.
    with pam_service(module_line(helper=helpers("authinfo_unavail"))) as service:
        run = pamtester(service, "hmu-test-alice", "")
        assert not run.ok and "PIN" not in run.output
    with pam_service(module_line(helper=helpers("pin_check"), max_tries=2)) as service:
        right_first = pamtester(service, "hmu-test-2468", "2468\n")
        assert right_first.ok and right_first.output.count("Fake key PIN:") == 1  # the helper's prompt, once
        right_second = pamtester(service, "hmu-test-2468", "1357\n2468\n")
        assert right_second.ok and right_second.output.count("Fake key PIN:") == 2


def test_with_nouserok_only_the_helper_asks(helpers):
    with pam_service(
        module_line(NOUSEROK_CONTROL, "nouserok", helper=helpers("pin_check")), "auth required pam_deny.so"
    ) as service:
        run = pamtester(service, "hmu-test-2468", "2468\n")
        assert run.ok and "Fake key PIN:" in run.output
    with pam_service(
        module_line(NOUSEROK_CONTROL, "nouserok", helper=helpers("user_unknown")), "auth required pam_permit.so"
    ) as service:
        run = pamtester(service, "hmu-test-alice", "")
        assert run.ok and "PIN" not in run.output


def test_the_helper_gets_no_descriptor_but_its_channel_and_a_clean_environment(helpers, monkeypatch):
    fd = inheritable_fd()
    monkeypatch.setenv("PYTHONPATH", "/nonexistent-planted")
    try:
        with pam_service(module_line(helper=helpers("fds"))) as service:
            outcome = python_pam(service, "hmu-test-alice", "123456")
    finally:
        os.close(fd)
    assert "fds: 0,1,2\n" in outcome.output + "\n"  # CVE-2019-12210 class: no host descriptor crosses exec
    assert "env: LANG,PATH\n" in outcome.output + "\n"


def _first_pass_stack(helper, flag):
    # pam_unix asks "Password:" and sets PAM_AUTHTOK (it then fails: the user does not exist; optional).
    return ("auth optional pam_unix.so nodelay", module_line("required", flag, helper=helper, max_tries=2))


def test_try_first_pass_uses_the_earlier_password_then_asks(helpers):
    with pam_service(*_first_pass_stack(helpers("pin_check"), "try_first_pass")) as service:
        first = pamtester(service, "hmu-test-2468", "2468\n")
        assert first.ok and "Fake key PIN:" not in first.output  # no second prompt
        second = pamtester(service, "hmu-test-2468", "1111\n2468\n")
        assert second.ok and "Fake key PIN:" in second.output


def test_use_first_pass_never_asks(helpers):
    with pam_service(*_first_pass_stack(helpers("pin_check"), "use_first_pass")) as service:
        assert pamtester(service, "hmu-test-2468", "2468\n").ok
        wrong = pamtester(service, "hmu-test-2468", "1111\n2468\n")
        assert not wrong.ok and "Fake key PIN:" not in wrong.output


def test_use_first_pass_without_an_earlier_password_fails(helpers):
    with pam_service(module_line("required", "use_first_pass", helper=helpers("success"))) as service:
        outcome = python_pam(service, "hmu-test-alice", "123456")
        assert not outcome.ok and outcome.code == pam.PAM_AUTH_ERR


@pytest.mark.parametrize(
    "bad",
    [
        "frobnicate",
        "timeout=0",
        "timeout=abc",
        "max_tries=99",
        "helper=relative/x",
        "helper=/nonexistent/helper",
        "store=",
    ],
)
def test_a_misconfigured_line_fails_closed(helpers, bad):
    line = module_line(helper=helpers("success")) + " " + bad
    with pam_service(line) as service:
        outcome = python_pam(service, "hmu-test-alice", "123456")
        assert not outcome.ok and outcome.code == pam.PAM_SYSTEM_ERR


@pytest.mark.parametrize("change", ["group_writable", "other_writable", "not_root_owned"])
def test_a_helper_file_others_could_change_is_refused(helpers, change):
    # The helper runs with the host's privileges: only a root-owned file that only root can write may be it.
    helper = helpers("success")
    with pam_service(module_line(helper=helper)) as service:
        assert python_pam(service, "hmu-test-alice", "x").ok  # the control: this very file is accepted as is
        if change == "not_root_owned":
            os.chown(helper, 65534, -1)
        else:
            helper.chmod(0o775 if change == "group_writable" else 0o757)
        outcome = python_pam(service, "hmu-test-alice", "x")
        assert not outcome.ok and outcome.code == pam.PAM_SYSTEM_ERR


def test_setcred_and_session_hooks_succeed_quietly():
    module = require_pam()
    with pam_service(f"auth optional {module}", f"session required {module}") as service:
        run = subprocess.run(
            ["pamtester", service, "hmu-test-alice", "setcred", "open_session", "close_session"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 0, run.stderr


def test_a_host_with_its_standard_descriptors_closed(helpers):
    # The channel may then land on descriptor 0 or 2; the helper must still get exactly 0, 1, 2.
    with pam_service(module_line(helper=helpers("fds"))) as service:
        run = subprocess.run(
            ["sh", "-c", f"exec pamtester {service} hmu-test-alice authenticate 0<&- 2>&-"],
            stdout=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    assert "fds: 0,1,2\n" in run.stdout


def _ignored_signals() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("SigIgn:")).split()[1], 16)


def test_the_helper_starts_with_no_blocked_and_no_host_ignored_signal(helpers):
    # Signal mask and ignored dispositions survive exec; the module gives the helper defaults and an open mask.
    import signal

    with pam_service(module_line(helper=helpers("signals"))) as service:
        previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            outcome = python_pam(service, "hmu-test-alice", "x")
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
            signal.signal(signal.SIGUSR2, previous)
    blocked, ignored = (int(v, 16) for v in re.search(r"blocked: (\w+) ignored: (\w+)", outcome.output).groups())
    assert blocked == 0
    assert not ignored & (1 << (signal.SIGUSR2 - 1))  # the stand-in's own Python ignores only SIGPIPE and SIGXFSZ


def test_a_host_that_ignores_sigchld_still_gets_the_exit_status(helpers):
    # With SIGCHLD ignored the kernel reaps children; the module restores the default for its call only.
    import signal

    with (
        pam_service(module_line(helper=helpers("success"))) as service,
        pam_service(module_line(helper=helpers("lie"))) as liar,
    ):
        previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        try:
            assert python_pam(service, "hmu-test-alice", "x").ok
            assert not python_pam(liar, "hmu-test-alice", "x").ok
            assert _ignored_signals() & (1 << (signal.SIGCHLD - 1))  # the kernel's record: the host's setting is back
        finally:
            signal.signal(signal.SIGCHLD, previous)
