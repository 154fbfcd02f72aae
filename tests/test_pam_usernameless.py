"""Usernameless sign-in through real libpam (issue 16): option `usernameless`, and an application that starts PAM
with no user (tests/pam/nameless.c, built here: pam_start with user NULL, as a greeter or `login` with the name left
empty). The real module and helper against the software key over UDP; the accounts are real local users made for
the test (useradd, unique names, removed afterwards), because the module signs in only accounts of this machine.

The key says who: the PIN, then (several accounts on the key) "Which account?", then the touch; PAM_USER is set to
the user whose record the assertion verified. Stand-in helpers (tests/pam/fake_helper.py) show what the module does
with a helper that names someone it should not.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pam
import pytest

from libhmacunlock.enroll import enroll
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.udp import running_udp_softkey
from libhmacunlock.throttle import USERNAMELESS_FILE
from tests.fixtures.pam_signin import WRONG_PIN
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.system import require_root
from tests.fixtures.warm import Daemon
from tests.pam.stack import NOUSEROK_CONTROL, fake_helper, module_line, pam_service, pamtester, record_settled

pytestmark = pytest.mark.root

SOURCE = Path(__file__).resolve().parent / "pam" / "nameless.c"


# --- the client, the accounts, the store ------------------------------------------------------------------------


@dataclass
class Run:
    code: int  # pam_authenticate's result
    user: str | None  # PAM_USER afterwards
    output: str  # every conversation message, tagged with its style ([echo-off], [echo-on], [info], [error])

    def asked(self, style: str) -> int:
        return self.output.count(f"[{style}]")


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Path:
    require_root()
    if shutil.which("gcc") is None or not Path("/usr/include/security/pam_appl.h").is_file():
        pytest.skip("needs gcc and libpam0g-dev to build the PAM client that starts PAM with no user")
    path = tmp_path_factory.mktemp("nameless") / "nameless"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(path), str(SOURCE), "-lpam"], check=True)
    return path


def nameless(client: Path, service: str, stdin: str = "", silent: bool = False) -> Run:
    run = subprocess.run(
        [str(client), service, *(["silent"] if silent else [])],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = run.stdout.splitlines()
    result = next(ln for ln in lines if ln.startswith("result: "))
    named = next(ln for ln in lines if ln.startswith("PAM_USER: "))[len("PAM_USER: ") :]
    output = run.stdout[: run.stdout.index("result: ")]
    return Run(int(result.split()[1]), None if named == "(unset)" else named, output + run.stderr)


@contextmanager
def local_accounts(count: int) -> Iterator[list[str]]:
    """`count` real local users with unique names (useradd --system, no home), removed afterwards."""
    if shutil.which("useradd") is None:
        pytest.skip("needs useradd to make local accounts")
    tag = uuid.uuid4().hex[:8]
    names = [f"hmu-ul-{tag}-{chr(ord('a') + i)}" for i in range(count)]
    made = []
    try:
        for name in names:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True,
                capture_output=True,
            )
            made.append(name)
        yield names
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def accounts() -> Iterator[list[str]]:
    with local_accounts(2) as names:
        yield names


def make_store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    return path


def enrolled_on(key, store: Path, *users: str) -> Path:
    for user in users:
        enroll(str(store), key.spec, ScriptedInteraction([TEST_PIN]), user)
    return store


def usernameless_line(key, store, *flags, control="required", **options) -> str:
    return module_line(control, "usernameless", *flags, store=store, device=key.spec, **options)


def slot(store: Path, user: str) -> dict:
    return json.loads((store / f"{user}.json").read_text())["slots"][0]


def retries(key) -> int:
    return key.authenticator.state.pin_retries


def unused_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once closed


# --- one account, two accounts ----------------------------------------------------------------------------------


def test_one_account_on_the_key_signs_in_sets_pam_user_and_rotates_the_record(client, served_key, accounts, tmp_path):
    alice = accounts[0]
    store = enrolled_on(served_key, make_store(tmp_path), alice)
    before = slot(store, alice)
    with pam_service(usernameless_line(served_key, store, "cue")) as service:
        run = nameless(client, service, TEST_PIN + "\n")
    assert run.code == pam.PAM_SUCCESS, run.output
    assert run.user == alice  # the key said who: PAM_USER for the modules after this one and the application
    assert "login:" not in run.output and run.asked("echo-on") == 0  # no user name asked, no account choice
    assert "[echo-off] Security key PIN: " in run.output and "Touch your security key" in run.output
    record_settled(store, alice)
    after = slot(store, alice)
    assert after["salt"] != before["salt"] and after["sign_count"] > before["sign_count"]  # as a named sign-in
    assert retries(served_key) == 8


def test_two_accounts_on_one_key_are_asked_which_and_both_choices_work(client, served_key, accounts, tmp_path):
    alice, bob = accounts
    store = enrolled_on(served_key, make_store(tmp_path), alice, bob)
    with pam_service(usernameless_line(served_key, store)) as service:
        by_number = nameless(client, service, f"{TEST_PIN}\n2\n")
        record_settled(store, bob)
        by_name = nameless(client, service, f"{TEST_PIN}\n{alice}\n")
        record_settled(store, alice)
    assert by_number.code == pam.PAM_SUCCESS and by_number.user == bob, by_number.output
    assert by_name.code == pam.PAM_SUCCESS and by_name.user == alice, by_name.output
    # the numbered list rides in the echo-on prompt's own text, after the PIN
    assert f"[echo-on]   1) {alice}\n  2) {bob}\nWhich account? " in by_number.output
    assert by_number.output.index("[echo-off] Security key PIN:") < by_number.output.index("Which account?")
    assert "login:" not in by_number.output + by_name.output
    assert slot(store, alice)["sign_count"] > 0 and slot(store, bob)["sign_count"] > 0


def test_a_bad_answer_to_which_account_is_asked_again(client, served_key, accounts, tmp_path):
    alice, bob = accounts
    store = enrolled_on(served_key, make_store(tmp_path), alice, bob)
    with pam_service(usernameless_line(served_key, store)) as service:
        run = nameless(client, service, f"{TEST_PIN}\n3\ncarol\n1\n")
    assert run.code == pam.PAM_SUCCESS and run.user == alice, run.output
    assert run.asked("echo-on") == 3 and run.output.count("Answer a number from 1 to 2, or one of the names.") == 2


def test_no_answer_to_which_account_fails_and_names_nobody(client, served_key, accounts, tmp_path):
    store = enrolled_on(served_key, make_store(tmp_path), *accounts)
    with pam_service(usernameless_line(served_key, store)) as service:
        run = nameless(client, service, f"{TEST_PIN}\n")  # input ends at "Which account?"
    assert run.code == pam.PAM_AUTH_ERR and run.user is None, run.output
    assert retries(served_key) == 8  # the PIN was right: no attempt used


def test_under_pam_silent_the_account_list_is_in_the_prompt(client, served_key, accounts, tmp_path):
    alice, bob = accounts
    store = enrolled_on(served_key, make_store(tmp_path), alice, bob)
    with pam_service(usernameless_line(served_key, store, max_tries=2)) as service:
        run = nameless(client, service, f"{WRONG_PIN}\n{TEST_PIN}\nx\n2\n", silent=True)
    assert run.code == pam.PAM_SUCCESS and run.user == bob, run.output
    assert run.asked("info") == 0  # PAM_SILENT: no text info at all; what must be seen rides in the prompts
    assert "attempts left" in run.output and f"  2) {bob}\nWhich account? " in run.output
    assert "Answer a number from 1 to 2" in run.output


# --- refusals ---------------------------------------------------------------------------------------------------


def test_an_account_this_machine_does_not_have_is_refused_before_the_pin(client, served_key, tmp_path):
    ghost = f"hmu-ul-ghost-{uuid.uuid4().hex[:8]}"  # enrolled, but no such user here
    store = enrolled_on(served_key, make_store(tmp_path), ghost)
    with pam_service(usernameless_line(served_key, store)) as service:
        run = nameless(client, service, TEST_PIN + "\n")
    assert run.code == pam.PAM_USER_UNKNOWN and run.user is None, run.output
    assert run.asked("echo-off") == 0 and "does not exist on this machine" in run.output  # no PIN asked
    assert retries(served_key) == 8


def test_nouserok_does_not_turn_an_unknown_account_into_ignore(client, served_key, tmp_path):
    store = enrolled_on(served_key, make_store(tmp_path), f"hmu-ul-ghost-{uuid.uuid4().hex[:8]}")
    permissive = "auth required pam_permit.so"
    with pam_service(usernameless_line(served_key, store, "nouserok", control=NOUSEROK_CONTROL), permissive) as svc:
        run = nameless(client, svc, TEST_PIN + "\n")
    assert run.code == pam.PAM_USER_UNKNOWN and run.user is None, run.output


def test_an_account_and_a_stranger_on_one_key_sign_in_the_account_without_asking(
    client, served_key, accounts, tmp_path
):
    alice = accounts[0]
    store = enrolled_on(served_key, make_store(tmp_path), alice, f"hmu-ul-ghost-{uuid.uuid4().hex[:8]}")
    with pam_service(usernameless_line(served_key, store)) as service:
        run = nameless(client, service, TEST_PIN + "\n")
    assert run.code == pam.PAM_SUCCESS and run.user == alice, run.output
    assert run.asked("echo-on") == 0  # the stranger is never offered


def test_a_wrong_pin_is_auth_err_with_the_attempts_left_and_charges_the_shared_count(
    client, served_key, accounts, tmp_path
):
    alice = accounts[0]
    store = enrolled_on(served_key, make_store(tmp_path), alice)
    with pam_service(usernameless_line(served_key, store, max_tries=1)) as service:
        run = nameless(client, service, WRONG_PIN + "\n")
        assert run.code == pam.PAM_AUTH_ERR and run.user is None, run.output
        assert "attempts left" in run.output and retries(served_key) == 7
        # the user is not known before the PIN: the usernameless sign-ins' shared count is charged, nobody's own
        shared = store / USERNAMELESS_FILE
        assert json.loads(shared.read_text())["failures"] == 1
        assert not (store / f".{alice}.throttle").exists()
        assert (shared.stat().st_mode & 0o777) == 0o600 and shared.stat().st_uid == 0
        ok = nameless(client, service, TEST_PIN + "\n")
    assert ok.code == pam.PAM_SUCCESS and ok.user == alice, ok.output
    record_settled(store, alice)  # the count is cleared after the verdict, under the user's store lock
    assert json.loads(shared.read_text())["failures"] == 0  # a verified sign-in clears it


def test_a_throttled_shared_count_refuses_before_the_key_is_asked(client, served_key, accounts, tmp_path):
    store = enrolled_on(served_key, make_store(tmp_path), accounts[0])
    (store / USERNAMELESS_FILE).write_text(json.dumps({"failures": 5, "last": time.time()}))
    os.chmod(store / USERNAMELESS_FILE, 0o600)
    with pam_service(usernameless_line(served_key, store)) as service:
        run = nameless(client, service, TEST_PIN + "\n")
    assert run.code == pam.PAM_AUTH_ERR and run.user is None, run.output
    assert run.asked("echo-off") == 0 and "without a user name" in run.output and "type your user name" in run.output


def test_no_key_is_authinfo_unavail_without_any_prompt(client, accounts, tmp_path, served_key):
    store = enrolled_on(served_key, make_store(tmp_path), accounts[0])
    line = module_line("required", "usernameless", store=store, device=f"udp:127.0.0.1:{unused_udp_port()}")
    with pam_service(line) as service:
        run = nameless(client, service, TEST_PIN + "\n")
    assert run.code == pam.PAM_AUTHINFO_UNAVAIL and run.user is None, run.output
    assert run.asked("echo-off") == 0 and run.asked("echo-on") == 0


def test_a_key_without_an_enrolled_credential_is_refused_before_the_pin(client, served_key, accounts, tmp_path):
    from tests.fixtures.softkey import set_pin

    store = enrolled_on(served_key, make_store(tmp_path), accounts[0])
    with running_udp_softkey(tmp_path / "other.json") as other:
        set_pin(other.authenticator)
        with pam_service(usernameless_line(other, store)) as service:
            run = nameless(client, service, TEST_PIN + "\n")
        assert other.authenticator.state.pin_retries == 8
    assert run.code == pam.PAM_AUTH_ERR and run.asked("echo-off") == 0, run.output  # as for a named user
    assert "No security key holding an enrolled credential" in run.output


def test_a_clone_is_refused_in_a_usernameless_sign_in(client, served_key, accounts, tmp_path):
    alice = accounts[0]
    store = enrolled_on(served_key, make_store(tmp_path), alice)
    clone_state = tmp_path / "clone.json"
    shutil.copy(tmp_path / "softkey.json", clone_state)  # the served key's state (tests/fixtures/udp.py)
    with pam_service(usernameless_line(served_key, store)) as service:
        for _ in range(2):  # the genuine key moves the stored counter past the clone's
            assert nameless(client, service, TEST_PIN + "\n").code == pam.PAM_SUCCESS
            record_settled(store, alice)
    with running_udp_softkey(clone_state) as clone, pam_service(usernameless_line(clone, store)) as service:
        run = nameless(client, service, TEST_PIN + "\n")
    assert run.code == pam.PAM_AUTH_ERR and run.user is None and "cloned" in run.output, run.output


def test_profile_with_percent_u_is_the_chosen_accounts_unlocked_with_its_unlock_key(
    client, served_key, accounts, tmp_path
):
    from libhmacunlock.targets import fscrypt
    from libhmacunlock.unlock import unlock
    from tests.fixtures.fscrypt import loop_ext4

    alice, bob = accounts
    store = enrolled_on(served_key, make_store(tmp_path), alice, bob)
    with loop_ext4(tmp_path) as mnt:
        profile = mnt / bob  # profile=MNT/%u: bob's; alice has none
        profile.mkdir()
        bobs_key = unlock(str(store), served_key.spec, ScriptedInteraction([TEST_PIN]), user=bob).unlock_key
        fscrypt.setup_profile(str(profile), bobs_key)
        (profile / "notes.txt").write_bytes(b"bob's notes\n")
        fscrypt.lock_profile(str(profile))
        try:
            with pam_service(usernameless_line(served_key, store, profile=f"{mnt}/%u")) as service:
                as_alice = nameless(client, service, f"{TEST_PIN}\n{alice}\n")
                record_settled(store, alice)
                assert fscrypt.profile_status(str(profile)) is fscrypt.Status.LOCKED  # alice's sign-in: not bob's
                as_bob = nameless(client, service, f"{TEST_PIN}\n{bob}\n")
            assert fscrypt.profile_status(str(profile)) is fscrypt.Status.UNLOCKED
            assert (profile / "notes.txt").read_bytes() == b"bob's notes\n"
        finally:
            fscrypt.lock_profile(str(profile))
    assert as_alice.code == pam.PAM_SUCCESS and as_alice.user == alice and "not unlocked" in as_alice.output
    assert as_bob.code == pam.PAM_SUCCESS and as_bob.user == bob, as_bob.output


def test_the_line_pam_snippet_prints_signs_in_without_a_name(client, served_key, accounts, tmp_path):
    from hmacunlock_cli import cmd_pam

    from tests.pam.stack import MODULE, require_module

    store = enrolled_on(served_key, make_store(tmp_path), accounts[1])
    require_module()
    printed = cmd_pam.snippet("required", device=served_key.spec, store=str(store), usernameless=True).split()
    with pam_service(" ".join(["auth", "required", str(MODULE), *printed[3:]])) as service:  # this build's module
        run = nameless(client, service, TEST_PIN + "\n")
    assert run.code == pam.PAM_SUCCESS and run.user == accounts[1], run.output


# --- without the option, or with a user named ---------------------------------------------------------------------


def test_without_the_option_pam_asks_for_the_name_as_before(client, served_key, accounts, tmp_path):
    alice, bob = accounts
    store = enrolled_on(served_key, make_store(tmp_path), alice, bob)
    with pam_service(module_line("required", store=store, device=served_key.spec)) as service:
        run = nameless(client, service, f"{bob}\n{TEST_PIN}\n")
    assert run.code == pam.PAM_SUCCESS and run.user == bob, run.output
    assert run.output.startswith("[echo-on] login:")  # pam_get_user's prompt, as before
    assert "Which account?" not in run.output


def test_with_the_option_a_user_the_application_named_is_signed_in_by_name(served_key, accounts, tmp_path):
    alice, bob = accounts
    store = enrolled_on(served_key, make_store(tmp_path), alice, bob)
    with pam_service(usernameless_line(served_key, store)) as service:
        run = pamtester(service, alice, TEST_PIN + "\n")
    assert run.ok and "Which account?" not in run.output, run.output


# --- the warm helper ----------------------------------------------------------------------------------------------


def test_usernameless_through_the_warm_helper(client, served_key, accounts, tmp_path, sockdir):
    alice, bob = accounts
    store = enrolled_on(served_key, make_store(tmp_path), alice, bob)
    never = fake_helper(tmp_path, "crash")  # spawning it would fail the sign-in
    daemon = Daemon(sockdir)
    try:
        with pam_service(usernameless_line(served_key, store, socket=daemon.socket, helper=never)) as service:
            run = nameless(client, service, f"{TEST_PIN}\n{bob}\n")
        assert run.code == pam.PAM_SUCCESS and run.user == bob, run.output
        assert daemon.served() == 1 and "Which account?" in run.output
        record_settled(store, bob)
        assert slot(store, bob)["sign_count"] > 0
    finally:
        daemon.stop()


# --- what the module accepts from a helper (stand-ins) ------------------------------------------------------------


def _stand_in(tmp_path, behaviour: str, name: str | None = None) -> Path:
    path = fake_helper(tmp_path, behaviour)
    if name is not None:
        path.with_name(f"{behaviour}.user").write_text(name)
    return path


@pytest.mark.parametrize(
    "behaviour, name",
    [
        ("success", None),  # a usernameless success that names nobody
        ("name_then_auth_err", "root"),  # a name, then no success
        ("name_twice", "root"),
        ("name_then_info", "root"),  # after the name only the verdict may come
        ("name_then_success", "root\x1b[2J"),  # a control character
        ("name_then_success", "../root"),
        ("name_then_success", "x" * 300),  # longer than any user name
    ],
)
def test_a_helper_that_names_the_user_wrongly_is_a_system_error(client, tmp_path, behaviour, name):
    with pam_service(module_line("required", "usernameless", helper=_stand_in(tmp_path, behaviour, name))) as svc:
        run = nameless(client, svc)
    assert run.code == pam.PAM_SYSTEM_ERR and run.user is None, run.output


def test_a_name_or_an_account_question_in_a_named_sign_in_is_a_system_error(tmp_path):
    from tests.pam.stack import python_pam

    for behaviour in ("name_then_success", "ask_account"):
        helper = _stand_in(tmp_path, behaviour, "root")
        with pam_service(module_line("required", "usernameless", helper=helper)) as service:
            outcome = python_pam(service, "root", "123456")  # the application named the user
        assert outcome.code == pam.PAM_SYSTEM_ERR, behaviour


def test_the_module_sets_pam_user_only_to_an_account_of_this_machine(client, tmp_path):
    with local_accounts(1) as (someone,):
        helper = _stand_in(tmp_path, "name_then_success", someone)
        with pam_service(module_line("required", "usernameless", helper=helper)) as service:
            present = nameless(client, service)
    # the same name once the account is gone: a helper that names someone the machine has not is not believed
    with pam_service(module_line("required", "usernameless", helper=helper)) as service:
        gone = nameless(client, service)
    assert present.code == pam.PAM_SUCCESS and present.user == someone, present.output
    assert gone.code == pam.PAM_USER_UNKNOWN and gone.user is None, gone.output


def test_the_request_says_usernameless_and_names_no_user(client, tmp_path):
    with pam_service(module_line("required", "usernameless", helper=_stand_in(tmp_path, "echo_request"))) as svc:
        run = nameless(client, svc)
    assert "request: usernameless=1|" in run.output and "user=" not in run.output
