"""Issue 16: each misleading message, fixed, through the real `hmacunlock` command and the software key.

Each one says the cause, the next step and its documented exit code, and where the mistake can be seen without
the key it is refused before any PIN is asked or touch is needed (the tests give no PIN on stdin for those: a
prompt would end in Cancelled, exit 10, instead of the code asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from libhmacunlock.errors import ClonedKey, ExitCode
from tests.cli_run import NOBODY, run, run_as
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.system import require_root, require_tool

PIN = TEST_PIN + "\n"


@pytest.fixture
def served(udp_softkey):
    """(the running key, its spec) with TEST_PIN set."""
    run("key", "set-pin", "--device", udp_softkey.spec, stdin=PIN)
    return udp_softkey, udp_softkey.spec


@pytest.fixture
def shared_store():
    """A store whose parents other users can search (tmp_path is root's 0700), removed afterwards."""
    base = tempfile.mkdtemp(prefix="hmacunlock-h8-")
    os.chmod(base, 0o711)
    try:
        yield os.path.join(base, "store")
    finally:
        shutil.rmtree(base)


def credentials_on(key) -> int:
    return len(key.authenticator.state.credentials)


# --- permissions: said as permissions, before the PIN ----------------------------------------------------------


def test_list_and_usernameless_unlock_as_non_root_say_they_need_root(served, shared_store):
    require_root()
    _, spec = served
    run("enroll", "alice", "--device", spec, "--store", shared_store, stdin=PIN)
    listed = run_as(NOBODY, "list", "--store", shared_store)
    assert listed.returncode == ExitCode.STORE
    assert "Permission denied to list the users in" in listed.stderr and "sudo hmacunlock list" in listed.stderr
    assert "internal error" not in listed.stderr
    anyone = run_as(NOBODY, "unlock", "--device", spec, "--store", shared_store)  # no PIN given: none asked
    assert anyone.returncode == ExitCode.STORE and "name the user" in anyone.stderr


def test_a_record_the_user_may_not_read_is_a_permission_problem_not_a_broken_record(served, shared_store):
    require_root()
    _, spec = served
    run("enroll", "alice", "--device", spec, "--store", shared_store, stdin=PIN)
    denied = run_as(NOBODY, "unlock", "alice", "--device", spec, "--store", shared_store)
    assert denied.returncode == ExitCode.STORE
    assert "Permission denied to read the record" in denied.stderr and "root" in denied.stderr
    assert "cannot be read" not in denied.stderr and "enroll again" not in denied.stderr
    troubleshooting = (Path(__file__).parent.parent / "docs" / "troubleshooting.md").read_text()
    section = troubleshooting.split("### RecordUnreadable", 1)[1].split("\n### ", 1)[0]
    assert "do not remove" in section.lower()  # the advice no longer destroys the unlock key


def test_non_root_enroll_is_refused_before_the_pin_and_makes_no_credential(served, shared_store):
    require_root()
    key, spec = served
    run("enroll", "alice", "--device", spec, "--store", shared_store, stdin=PIN)  # the store exists, root's
    before = credentials_on(key)
    refused = run_as(NOBODY, "enroll", "bob", "--device", spec, "--store", shared_store, stdin=PIN)
    assert refused.returncode == ExitCode.STORE
    assert (
        "Permission denied to write to the store" in refused.stderr and "sudo hmacunlock enroll bob" in refused.stderr
    )
    assert "PIN" not in refused.stderr  # never asked
    assert credentials_on(key) == before


# --- "is not enrolled" only for users who are not -------------------------------------------------------------


def test_remove_credential_with_a_recovery_slot_id_names_the_right_command(served, tmp_path):
    _, spec = served
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)
    slot = json.loads(run("list", "--store", store, "--json").stdout)["users"][0]["recovery"][0]["id"]
    wrong = run("remove", "alice", "--store", store, "--credential", slot, ok=False)
    assert wrong.returncode == ExitCode.USAGE
    assert "is a recovery slot of alice" in wrong.stderr and f"recovery remove alice {slot}" in wrong.stderr
    assert "not enrolled" not in wrong.stderr
    nothing = run("remove", "alice", "--store", store, "--credential", "bm8tc3VjaA", ok=False)
    assert nothing.returncode == ExitCode.NOT_ENROLLED
    assert "has no key with credential id" in nothing.stderr and "not enrolled" not in nothing.stderr
    run("recovery", "remove", "alice", slot, "--store", store, "--yes")
    assert json.loads(run("list", "--store", store, "--json").stdout)["users"][0]["recovery"] == []


def test_recovery_remove_keeps_the_last_way_in_unless_forced(served, tmp_path):
    _, spec = served
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)
    listed = json.loads(run("list", "--store", store, "--json").stdout)["users"][0]
    run("remove", "alice", "--store", store, "--credential", listed["keys"][0]["credential_id"], "--yes")
    slot = listed["recovery"][0]["id"]
    last = run("recovery", "remove", "alice", slot, "--store", store, ok=False)
    assert last.returncode == ExitCode.USAGE and "last way to open" in last.stderr and "--force" in last.stderr
    run("recovery", "remove", "alice", slot, "--store", store, "--force", "--yes")


def test_enroll_with_recovery_but_no_recovery_slot_says_so(served, tmp_path):
    _, spec = served
    store = str(tmp_path / "store")
    from libhmacunlock.softkey.udp import running_udp_softkey

    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    with running_udp_softkey(tmp_path / "backup.json") as backup:
        no_slot = run("enroll", "alice", "--device", backup.spec, "--store", store, "--recovery", ok=False)
    assert no_slot.returncode == ExitCode.NOT_ENROLLED
    assert "has no recovery key or passphrase" in no_slot.stderr and "recovery add alice" in no_slot.stderr
    assert "is not enrolled" not in no_slot.stderr


# --- bad arguments: refused before the PIN --------------------------------------------------------------------


@pytest.mark.parametrize("name", [" ", "Alice Smith", "-alice", "alice\t"])
def test_enroll_refuses_names_that_are_no_login_before_the_pin(served, tmp_path, name):
    key, spec = served
    refused = run("enroll", "--device", spec, "--store", str(tmp_path / "store"), "--", name, ok=False)
    assert refused.returncode == ExitCode.USAGE and "is not a user name" in refused.stderr
    assert credentials_on(key) == 0 and not (tmp_path / "store").exists()


@pytest.mark.parametrize("rp_id", ["", "Hmacunlock.Host", "a..b", "with space"])
def test_enroll_and_unlock_refuse_a_malformed_rp_id_before_the_pin(served, tmp_path, rp_id):
    key, spec = served
    store = str(tmp_path / "store")
    refused = run("enroll", "alice", "--device", spec, "--store", store, "--rp-id", rp_id, ok=False)
    assert refused.returncode == ExitCode.USAGE and "is not an RP id" in refused.stderr
    assert credentials_on(key) == 0
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    unlock = run("unlock", "alice", "--device", spec, "--store", store, "--rp-id", rp_id, ok=False)
    assert unlock.returncode == ExitCode.USAGE and "is not an RP id" in unlock.stderr


def test_a_too_short_recovery_passphrase_is_refused_before_the_pin(served, tmp_path):
    key, spec = served
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    retries = key.authenticator.state.pin_retries
    short = run(
        "recovery", "add", "alice", "--passphrase", "--device", spec, "--store", store, stdin="short\n", ok=False
    )
    assert short.returncode == ExitCode.USAGE and "at least 8 characters" in short.stderr
    assert key.authenticator.state.pin_retries == retries
    run("recovery", "add", "alice", "--passphrase", "--device", spec, "--store", store, stdin="long enough\n" + PIN)
    got = run("recovery", "unlock", "alice", "--store", store, stdin="long enough\n")
    assert got.stdout == "unlocked alice\n"


# --- the key ---------------------------------------------------------------------------------------------------


def test_key_info_is_not_compatible_with_a_blocked_pin(served):
    key, spec = served
    key.authenticator.state.pin_retries = 0  # what eight wrong PINs leave
    text = run("key", "info", "--device", spec).stdout
    assert "compatible with hmacunlock: NO" in text and "PIN is blocked" in text
    info = json.loads(run("key", "info", "--device", spec, "--json").stdout)
    assert info["schema"] == 1 and info["compatible"] is False and info["pin_blocked"] is True


def test_hid_paths_that_are_no_key_say_why():
    null = run("key", "info", "--device", "hid:/dev/null", ok=False)
    assert null.returncode == ExitCode.NO_KEY and "is not a hidraw device" in null.stderr
    assert "OSError" not in null.stderr
    missing = run("key", "info", "--device", "hid:/dev/hidraw-h8-none", ok=False)
    assert missing.returncode == ExitCode.NO_KEY and "No device at /dev/hidraw-h8-none" in missing.stderr


def test_ipv6_specs_are_printed_in_brackets(tmp_path):
    from libhmacunlock.udp import format_udp_spec, parse_udp_spec

    assert format_udp_spec("::1", 4242) == "udp:[::1]:4242" and parse_udp_spec("udp:[::1]:4242") == ("::1", 4242)
    nothing = run("key", "info", "--device", "udp:[::1]:9", ok=False)  # the discard port: nobody answers
    assert nothing.returncode == ExitCode.NO_KEY and "udp:[::1]:9" in nothing.stderr and ":::" not in nothing.stderr
    proc = subprocess.Popen(
        [*run_prefix(), "softkey", "serve", "--state", str(tmp_path / "k.json"), "--udp", "[::1]:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = proc.stdout.readline()
        assert "udp:[::1]:" in ready, ready
    finally:
        proc.terminate()
        proc.wait(10)


def run_prefix() -> list[str]:
    import sys

    return [sys.executable, "-m", "hmacunlock_cli"]


def test_a_counter_that_did_not_advance_is_not_said_to_go_backwards():
    assert "did not advance (it is 4 again" in ClonedKey(4, 4).message
    assert "went backwards (it is 3; the last unlock saw 4)" in ClonedKey(4, 3).message


# --- list --json ----------------------------------------------------------------------------------------------


def test_list_json_is_whole_with_a_broken_record_inside(served, tmp_path):
    _, spec = served
    store = tmp_path / "store"
    run("enroll", "alice", "--device", spec, "--store", str(store), stdin=PIN)
    (store / "bob.json").write_text("{not json")
    os.chmod(store / "bob.json", 0o600)
    listed = run("list", "--store", str(store), "--json", ok=False)
    assert listed.returncode == ExitCode.STORE
    data = json.loads(listed.stdout)  # one whole document
    assert data["schema"] == 1 and [u["user"] for u in data["users"]] == ["alice", "bob"]
    assert data["users"][0]["keys"] and data["users"][1]["error"]["type"] == "RecordUnreadable"
    assert data["users"][1]["error"]["exit_code"] == ExitCode.STORE
    text = run("list", "--store", str(store), ok=False)
    assert "alice: 1 key" in text.stdout and "bob.json cannot be read" in text.stderr


# --- LUKS1 ----------------------------------------------------------------------------------------------------


def test_a_luks1_volume_is_named_as_such(tmp_path):
    require_tool("cryptsetup")
    image = tmp_path / "luks1.img"
    with open(image, "wb") as f:
        f.truncate(4 << 20)
    subprocess.run(
        ["cryptsetup", "luksFormat", "--type", "luks1", "--batch-mode", "--iter-time", "1", str(image)],
        input=b"volume passphrase",
        check=True,
        capture_output=True,
    )
    refused = run("luks", "unlock", str(image), "alice", "--test-passphrase", ok=False)
    assert refused.returncode == ExitCode.TARGET
    assert "is a LUKS1 volume" in refused.stderr and "cryptsetup convert --type luks2" in refused.stderr
    assert "Dump operation" not in refused.stderr
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\0" * 4096)
    not_luks = run("luks", "unlock", str(plain), "alice", "--test-passphrase", ok=False)
    assert not_luks.returncode == ExitCode.TARGET and "is not a LUKS volume" in not_luks.stderr


# --- "Which account?" ------------------------------------------------------------------------------------------


def test_an_out_of_range_answer_to_which_account_is_asked_again(served, tmp_path):
    from tests.fixtures.terminal import Terminal

    _, spec = served
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    run("enroll", "bob", "--device", spec, "--store", store, stdin=PIN)
    term = Terminal(["unlock", "--device", spec, "--store", store])
    term.expect(rb"PIN.*: ")
    term.wait_echo_off()
    term.send(TEST_PIN)
    term.expect(rb"Which account\? ")
    term.send("3")
    term.expect(rb"Answer a number from 1 to 2[\s\S]*Which account\? ")
    term.send("carol")
    term.expect(rb"Answer a number[\s\S]*Answer a number[\s\S]*Which account\? ")
    term.send("2")
    assert term.finish() == 0 and b"unlocked bob" in term.output


# --- --device list ---------------------------------------------------------------------------------------------


def test_device_list_prints_the_keys_present(softkey_auth):
    """USB HID cannot run here: the listing is given the real software key behind a HID descriptor, and a device
    that does not answer; the CLI run itself sees this machine's (absent) USB keys."""
    import uuid
    from types import SimpleNamespace

    from fido2.ctap import CtapDevice

    from libhmacunlock.discovery import present_keys
    from libhmacunlock.softkey.device import SoftKeyDevice

    class Silent(CtapDevice):
        descriptor = SimpleNamespace(path="/dev/hidraw8", product_name=None)
        capabilities = 0

        def call(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(5, "Input/output error")

        @classmethod
        def list_devices(cls):  # type: ignore[no-untyped-def]
            return iter(())

    softkey_auth.state.aaguid = uuid.UUID("cb69481e-8ff7-4039-93ec-0a2729a154a8").bytes
    yubi = SoftKeyDevice(softkey_auth)
    yubi.descriptor = SimpleNamespace(path="/dev/hidraw7", product_name="YubiKey OTP+FIDO+CCID")
    listed = present_keys([yubi, Silent()])
    yubi_aaguid = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
    assert [(k.spec, k.product, k.aaguid, k.model) for k in listed] == [
        ("hid:/dev/hidraw7", "YubiKey OTP+FIDO+CCID", yubi_aaguid, "YubiKey 5 (USB-A, no NFC; firmware 5.1)"),
        ("hid:/dev/hidraw8", "unnamed HID device", None, None),
    ]
    if not list(Path("/dev").glob("hidraw*")):
        shown = run("key", "info", "--device", "list")
        assert "No USB security key is plugged in" in shown.stdout


# --- the same key twice ----------------------------------------------------------------------------------------


def test_enrolling_a_key_that_already_holds_the_users_credential_is_refused_before_any_pin(served, tmp_path):
    key, spec = served
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)
    before, retries = credentials_on(key), key.authenticator.state.pin_retries
    for how in (["--existing-device", spec], ["--recovery"]):
        again = run("enroll", "alice", "--device", spec, "--store", store, *how, ok=False)  # no PIN on stdin
        assert again.returncode == ExitCode.USAGE and "already enrolled for 'alice'" in again.stderr, again.stderr
    assert credentials_on(key) == before and key.authenticator.state.pin_retries == retries
    run("enroll", "bob", "--device", spec, "--store", store, stdin=PIN)  # another user on the same key: fine
