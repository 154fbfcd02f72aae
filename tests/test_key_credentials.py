"""Issue 16: the key's credentials managed through the real `hmacunlock` command and the software key over UDP
(real CTAP 2.1 credential management): `key credentials` lists each credential with its local user and slot (or
"not on this machine") and the key's capacity; `key credentials delete` confirms, refuses the last way in without
--force; `remove` deletes on the key too; `key reset` is confirmed; `enroll --label` names a key in `list` and in
PIN prompts; makeCredential's excludeList refuses a second credential of the user that the probe cannot see.

What the key holds afterwards is read with python-fido2's own CredentialManagement class, not our client.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fido2.ctap2 import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2

from libhmacunlock.errors import ExitCode
from libhmacunlock.records import b64e
from libhmacunlock.softkey.credentials import MAX_RESIDENT_CREDENTIALS
from libhmacunlock.softkey.device import SoftKeyDevice
from tests.cli_run import run
from tests.fixtures.softkey import TEST_PIN, make_resident
from tests.fixtures.terminal import Terminal

PIN = TEST_PIN + "\n"
R = CredentialManagement.RESULT


@pytest.fixture
def served(udp_softkey):
    run("key", "set-pin", "--device", udp_softkey.spec, stdin=PIN)
    return udp_softkey


def on_key(server) -> dict[str, str]:
    """The key's discoverable credentials (base64url id -> user name), read with python-fido2's own classes."""
    ctap = Ctap2(SoftKeyDevice(server.authenticator))
    token = ClientPin(ctap, PinProtocolV2()).get_pin_token(TEST_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    cm = CredentialManagement(ctap, PinProtocolV2(), token)
    found = {}
    for rp in cm.enumerate_rps():
        for cred in cm.enumerate_creds(rp[R.RP_ID_HASH]):
            found[b64e(cred[R.CREDENTIAL_ID]["id"])] = cred[R.USER].get("name")
    return found


def foreign_credential(server, rp_id: str = "example.com") -> str:
    """A discoverable credential of a website (made with python-fido2's Ctap2), not of this machine's store."""
    ctap = Ctap2(SoftKeyDevice(server.authenticator))
    made = make_resident(ctap, PinProtocolV2(), b"web-user", "alice@example.com", rp_id=rp_id)
    return b64e(made.auth_data.credential_data.credential_id)


def listed(store: str) -> dict:
    return {u["user"]: u for u in json.loads(run("list", "--store", store, "--json").stdout)["users"]}


def pin_generation(store: str) -> int:
    path = Path(store) / ".pin.lock"
    data = path.read_bytes() if path.exists() else b""
    return int.from_bytes(data, "big") if data else 0


def key_changes(store: str) -> int:
    path = Path(store) / ".keys.changes"
    data = path.read_bytes() if path.exists() else b""
    return int.from_bytes(data, "big") if data else 0


# --- listing -------------------------------------------------------------------------------------------------


def test_key_credentials_lists_each_with_its_user_and_slot_and_the_capacity(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, "--label", "main-nano", stdin=PIN)
    run("enroll", "bob", "--device", spec, "--store", store, stdin=PIN)
    web = foreign_credential(served)
    users = listed(store)
    alice_id, bob_id = users["alice"]["keys"][0]["credential_id"], users["bob"]["keys"][0]["credential_id"]

    text = run("key", "credentials", "--device", spec, "--store", store, stdin=PIN).stdout
    lines = text.splitlines()
    alice_line = next(line for line in lines if alice_id in line)
    assert "alice's key 'main-nano'" in alice_line and f"slot {alice_id}" in alice_line
    assert "bob's key" in next(line for line in lines if bob_id in line)
    web_line = next(line for line in lines if web in line)
    assert "not on this machine" in web_line and "alice@example.com" in web_line
    assert "rp example.com" in lines
    assert f"3 discoverable credentials on the key; room for {MAX_RESIDENT_CREDENTIALS - 3} more." in lines

    data = json.loads(run("key", "credentials", "--device", spec, "--store", store, "--json", stdin=PIN).stdout)
    assert data["schema"] == 1
    by_id = {c["credential_id"]: c for c in data["credentials"]}
    assert set(by_id) == set(on_key(served))  # every credential the key holds, no more
    assert by_id[alice_id]["local"] == {"user": "alice", "slot": alice_id, "label": "main-nano", "last_way_in": True}
    assert by_id[web]["local"] is None and by_id[web]["rp_id"] == "example.com"
    # the capacity is the key's own getCredsMetadata answer
    ctap = Ctap2(SoftKeyDevice(served.authenticator))
    token = ClientPin(ctap, PinProtocolV2()).get_pin_token(TEST_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    meta = CredentialManagement(ctap, PinProtocolV2(), token).get_metadata()
    assert data["capacity"] == {"existing": meta[R.EXISTING_CRED_COUNT], "remaining": meta[R.MAX_REMAINING_COUNT]}
    assert data["capacity"] == {"existing": 3, "remaining": MAX_RESIDENT_CREDENTIALS - 3}


def test_key_credentials_pin_goes_through_the_pin_guard_lock(served, tmp_path):
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", served.spec, "--store", store, stdin=PIN)
    before = pin_generation(store)
    run("key", "credentials", "--device", served.spec, "--store", store, stdin=PIN)
    assert pin_generation(store) == before + 1  # the cm token's PIN is counted
    wrong = run("key", "credentials", "--device", served.spec, "--store", store, stdin="99999999\n", ok=False)
    assert wrong.returncode == ExitCode.WRONG_PIN and "attempts left" in wrong.stderr


# --- deleting ------------------------------------------------------------------------------------------------


def test_delete_without_a_terminal_needs_yes_and_deletes_a_foreign_credential(served, tmp_path):
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", served.spec, "--store", store, stdin=PIN)
    web = foreign_credential(served)
    refused = run("key", "credentials", "delete", web, "--device", served.spec, "--store", store, ok=False)
    assert refused.returncode == ExitCode.USAGE and "--yes" in refused.stderr and "not a terminal" in refused.stderr
    assert web in on_key(served)  # nothing asked (no PIN on stdin), nothing deleted
    before, changes = pin_generation(store), key_changes(store)
    done = run("key", "credentials", "delete", web, "--device", served.spec, "--store", store, "--yes", stdin=PIN)
    assert f"deleted credential {web}" in done.stdout
    assert web not in on_key(served) and len(on_key(served)) == 1  # alice's stays
    assert pin_generation(store) == before + 1  # the cm token's PIN, counted by the PIN guard
    assert key_changes(store) > changes  # a key change counted (the cm token's): a warm sign-in probes again
    again = run(
        "key", "credentials", "delete", web, "--device", served.spec, "--store", store, "--yes", stdin=PIN, ok=False
    )
    assert again.returncode == ExitCode.NOT_ENROLLED and "holds no credential" in again.stderr


def test_delete_of_the_last_way_in_is_refused_before_the_pin_unless_forced(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    alice_id = listed(store)["alice"]["keys"][0]["credential_id"]
    refused = run("key", "credentials", "delete", alice_id, "--device", spec, "--store", store, "--yes", ok=False)
    assert refused.returncode == ExitCode.USAGE and "last way to open alice's unlock key" in refused.stderr
    assert "--force" in refused.stderr and "PIN" not in refused.stderr.split("last way")[0]
    assert alice_id in on_key(served)
    forced = run(
        "key", "credentials", "delete", alice_id, "--device", spec, "--store", store, "--yes", "--force", stdin=PIN
    )
    assert alice_id not in on_key(served)
    # the slot is still in the store: said so, with the command that removes it
    assert f"hmacunlock remove alice --credential {alice_id}" in forced.stdout
    assert listed(store)["alice"]["keys"][0]["credential_id"] == alice_id


def test_delete_with_remove_slot_removes_the_store_slot_too(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)  # a second way in
    alice_id = listed(store)["alice"]["keys"][0]["credential_id"]
    run(
        "key", "credentials", "delete", alice_id, "--device", spec, "--store", store, "--yes", "--remove-slot",
        stdin=PIN,
    )  # fmt: skip
    assert alice_id not in on_key(served) and listed(store)["alice"]["keys"] == []


def test_delete_at_a_terminal_says_what_becomes_unopenable_and_asks(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, "--label", "nano", stdin=PIN)
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)
    alice_id = listed(store)["alice"]["keys"][0]["credential_id"]
    term = Terminal(["key", "credentials", "delete", alice_id, "--device", spec, "--store", store])
    term.expect(rb"Type 'yes' to go on: ")
    assert b"alice's key 'nano'" in term.output and b"can no longer be opened" in term.output
    term.send("no")
    assert term.finish() == ExitCode.NOT_CONFIRMED and b"Not confirmed" in term.output
    assert alice_id in on_key(served)
    term = Terminal(["key", "credentials", "delete", alice_id, "--device", spec, "--store", store])
    term.expect(rb"Type 'yes' to go on: ")
    term.send("yes")
    term.expect(rb"PIN of the security key: ")
    term.wait_echo_off()
    term.send(TEST_PIN)
    term.expect(rb"Remove the slot from alice's record too")
    term.send("yes")
    assert term.finish() == 0 and b"removed key" in term.output
    assert alice_id not in on_key(served) and listed(store)["alice"]["keys"] == []


# --- remove deletes on the key too ---------------------------------------------------------------------------


def test_remove_with_delete_on_key_deletes_the_credential_there(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)
    alice_id = listed(store)["alice"]["keys"][0]["credential_id"]
    kept = run("remove", "alice", "--store", store, "--credential", alice_id, "--device", spec, "--yes")
    assert alice_id in on_key(served)  # not at a terminal, not asked for: the key is left alone, and it says how
    assert f"'hmacunlock key credentials delete {alice_id} --device D'" in kept.stderr
    assert "stays on the key until you delete it there)" not in kept.stdout
    run("enroll", "bob", "--device", spec, "--store", store, stdin=PIN)
    bob_id = listed(store)["bob"]["keys"][0]["credential_id"]
    gone = run("remove", "bob", "--store", store, "--device", spec, "--delete-on-key", "--yes", stdin=PIN)
    assert f"deleted credential {bob_id}" in gone.stdout and bob_id not in on_key(served)
    assert "bob" not in listed(store)


def test_remove_at_a_terminal_offers_the_delete_when_the_key_holds_it(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)
    alice_id = listed(store)["alice"]["keys"][0]["credential_id"]
    term = Terminal(["remove", "alice", "--store", store, "--credential", alice_id, "--device", spec])
    term.expect(rb"Type 'yes' to go on: ")  # remove's own question first (what goes, what becomes unopenable)
    term.send("yes")
    term.expect(rb"still on the security key[^\n]*Type 'yes' to delete: ")
    term.send("yes")
    term.expect(rb"PIN of the security key: ")
    term.wait_echo_off()
    term.send(TEST_PIN)
    assert term.finish() == 0 and b"deleted credential" in term.output
    assert alice_id not in on_key(served)


# --- reset ---------------------------------------------------------------------------------------------------


def test_key_reset_needs_confirmation_and_the_ten_second_window(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    refused = run("key", "reset", "--device", spec, "--store", store, ok=False)
    assert refused.returncode == ExitCode.USAGE and "--yes" in refused.stderr
    assert len(on_key(served)) == 1
    term = Terminal(["key", "reset", "--device", spec, "--store", store])
    term.expect(rb"Type 'reset' to go on: ")
    assert b"THIS ERASES THE SECURITY KEY" in term.output and b"credentials of alice" in term.output
    term.send("yes")  # not the word
    assert term.finish() == ExitCode.NOT_CONFIRMED and len(on_key(served)) == 1
    served.authenticator._powered_up = time.monotonic() - 60  # plugged in a minute ago
    late = run("key", "reset", "--device", spec, "--store", store, "--yes", ok=False)
    assert late.returncode == ExitCode.CANCELLED and "within about 10 seconds of being plugged in" in late.stderr
    assert len(on_key(served)) == 1
    served.power_cycle()  # unplugged and plugged back in
    done = run("key", "reset", "--device", spec, "--store", store, "--yes")
    assert "was reset" in done.stdout and "Touch your security key to erase it" in done.stderr
    assert served.authenticator.state.credentials == []
    info = json.loads(run("key", "info", "--device", spec, "--json").stdout)
    assert info["pin_set"] is False


def test_key_credentials_asks_no_pin_at_the_floor_unless_yes_at_a_terminal(served, tmp_path):
    """`key credentials` and `key credentials delete` spend a PIN like any other command: behind the PIN floor
    (--pin-floor, default 3). At the floor a script is refused before the PIN (no attempt used), a lower
    --pin-floor lets it go on, and at a terminal only 'yes' does."""
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    website = foreign_credential(served)
    served.authenticator.state.pin_retries = 3
    refused = run("key", "credentials", "--device", spec, "--store", store, stdin=PIN, ok=False)
    assert refused.returncode == ExitCode.PIN_LOCKED and "only 3 PIN attempts left" in refused.stderr
    assert "to list or delete its credentials" in refused.stderr
    delete = ["key", "credentials", "delete", website, "--device", spec, "--store", store, "--yes"]
    refused = run(*delete, stdin=PIN, ok=False)
    assert refused.returncode == ExitCode.PIN_LOCKED and "only 3 PIN attempts left" in refused.stderr
    assert served.authenticator.state.pin_retries == 3 and pin_generation(store) == 0  # no PIN sent
    run(*delete, "--pin-floor", "2", stdin=PIN)
    assert website not in on_key(served)
    served.authenticator.state.pin_retries = 3
    listed = run("key", "credentials", "--device", spec, "--store", store, "--pin-floor", "2", stdin=PIN)
    assert "alice" in listed.stdout and served.authenticator.state.pin_retries == 8
    served.authenticator.state.pin_retries = 3
    term = Terminal(["key", "credentials", "--device", spec, "--store", store])
    term.expect(rb"Type 'yes' to go on: ")
    term.send("yes")
    term.expect(rb"PIN of the security key: ")
    term.wait_echo_off()
    term.send(TEST_PIN)
    assert term.finish() == 0 and b"alice" in term.output
    assert served.authenticator.state.pin_retries == 8


def test_remove_at_the_floor_removes_the_slot_and_says_how_to_delete_the_credential_later(served, tmp_path):
    """`remove --delete-on-key` with the key at its floor: the slot is removed, no PIN is sent, the credential stays
    on the key and the command says how to delete it later; the exit says the asked-for delete was not done. At a
    terminal the same delete, offered and declined at the floor, is no failure of the removal."""
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    run("enroll", "bob", "--device", spec, "--store", store, stdin=PIN)
    served.authenticator.state.pin_retries = 3
    removed = run("remove", "bob", "--store", store, "--device", spec, "--delete-on-key", "--yes", ok=False)
    assert removed.returncode == ExitCode.PIN_LOCKED and "only 3 PIN attempts left" in removed.stderr
    assert "bob" not in listed(store) and "stays on the security key" in removed.stdout + removed.stderr
    assert served.authenticator.state.pin_retries == 3 and pin_generation(store) == 0
    term = Terminal(["remove", "alice", "--store", store, "--device", spec, "--yes"])
    term.expect(rb"Type 'yes' to delete: ")
    term.send("yes")
    term.expect(rb"Type 'yes' to go on: ")  # the floor: asked before any PIN
    term.send("no")
    assert term.finish() == 0 and b"stays on the security key" in term.output, term.output
    assert served.authenticator.state.pin_retries == 3 and listed(store) == {}


def test_change_pin_refuses_a_malformed_old_pin_and_waits_at_the_floor(served):
    """`key change-pin` spends the current PIN: one no key accepts is refused before it is sent, and at the floor it
    is asked only after 'yes' at a terminal (off a terminal: refused before any PIN)."""
    served.authenticator.state.pin_retries = 5
    malformed = run("key", "change-pin", "--device", served.spec, stdin="12\n12345678\n", ok=False)
    assert malformed.returncode != 0 and served.authenticator.state.pin_retries == 5
    served.authenticator.state.pin_retries = 3
    floor = run("key", "change-pin", "--device", served.spec, stdin=f"{TEST_PIN}\n87654321\n", ok=False)
    assert floor.returncode == ExitCode.PIN_LOCKED and served.authenticator.state.pin_retries == 3
    assert "not asked for the PIN to change it" in floor.stderr and "Sign in with" not in floor.stderr
    changed = run("key", "change-pin", "--device", served.spec, "--pin-floor", "2", stdin=f"{TEST_PIN}\n87654321\n")
    assert "PIN changed" in changed.stdout and served.authenticator.state.pin_retries == 8


# --- labels --------------------------------------------------------------------------------------------------


def test_labels_in_list_and_json_and_bad_labels_refused_before_the_pin(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    for bad in ("", " nano", "a'b", "x" * 33, "tab\there"):
        refused = run("enroll", "alice", "--device", spec, "--store", store, "--label", bad, ok=False)
        assert refused.returncode == ExitCode.USAGE and "is not a key label" in refused.stderr
    assert served.authenticator.state.credentials == []  # nothing was asked of the key
    out = run("enroll", "alice", "--device", spec, "--store", store, "--label", "main nano", stdin=PIN).stdout
    assert "label 'main nano'" in out
    text = run("list", "--store", store).stdout
    assert "'main nano'" in text
    assert listed(store)["alice"]["keys"][0]["label"] == "main nano"
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)
    assert "key" in run("list", "--store", store).stdout


def test_a_record_without_labels_still_opens_and_a_changed_label_is_tampering(served, tmp_path):
    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "bob", "--device", spec, "--store", store, stdin=PIN)
    record_path = Path(store) / "bob.json"
    assert "label" not in json.loads(record_path.read_text())["slots"][0]  # no label: no field (old AAD)
    run("unlock", "bob", "--device", spec, "--store", store, stdin=PIN)
    run("enroll", "alice", "--device", spec, "--store", store, "--label", "nano", stdin=PIN)
    path = Path(store) / "alice.json"
    record = json.loads(path.read_text())
    record["slots"][0]["label"] = "yours"  # the label is bound by the slot's AAD like every other field
    path.write_text(json.dumps(record))
    tampered = run("unlock", "alice", "--device", spec, "--store", store, stdin=PIN, ok=False)
    assert tampered.returncode == ExitCode.STORE and "does not open" in tampered.stderr
    record["slots"][0]["label"] = "bad\x1b[2J"  # a control character never reaches a prompt
    path.write_text(json.dumps(record))
    broken = run("list", "--store", store, ok=False)
    assert broken.returncode == ExitCode.STORE and "field label" in broken.stderr


def test_pin_prompts_name_the_key_by_its_label(served, tmp_path):
    from libhmacunlock.softkey.udp import running_udp_softkey

    store = str(tmp_path / "store")
    spec = served.spec
    run("enroll", "alice", "--device", spec, "--store", store, "--label", "main-nano", stdin=PIN)
    with running_udp_softkey(tmp_path / "backup.json") as backup:
        run("key", "set-pin", "--device", backup.spec, stdin=PIN)
        term = Terminal(
            ["enroll", "alice", "--device", backup.spec, "--existing-device", spec, "--store", store]
            + ["--label", "backup-nano"]
        )
        term.expect(rb"PIN of 'main-nano': ")  # the enrolled key authorising
        term.wait_echo_off()
        term.send(TEST_PIN)
        term.expect(rb"PIN of the new security key 'backup-nano': ")
        term.wait_echo_off()
        term.send(TEST_PIN)
        assert term.finish() == 0, term.output
        term = Terminal(["unlock", "alice", "--device", backup.spec, "--store", store])
        term.expect(rb"PIN of 'backup-nano' \(8 attempts left\): ")  # the one slot the key holds
        term.wait_echo_off()
        term.send(TEST_PIN)
        assert term.finish() == 0 and b"unlocked alice" in term.output


# --- the excludeList backstop --------------------------------------------------------------------------------


def test_a_credential_hidden_from_the_probe_is_refused_by_the_exclude_list(served, tmp_path):
    from libhmacunlock.softkey.udp import running_udp_softkey

    store = str(tmp_path / "store")
    spec = served.spec
    with running_udp_softkey(tmp_path / "other.json") as other:
        run("key", "set-pin", "--device", other.spec, stdin=PIN)
        run("enroll", "alice", "--device", other.spec, "--store", store, stdin=PIN)
        run("enroll", "alice", "--device", spec, "--existing-device", other.spec, "--store", store, stdin=PIN + PIN)
        assert len(served.authenticator.state.credentials) == 1
        # the key now hides alice's credential from every check without the PIN (as it does a credProtect-3 one,
        # which older versions enrolled): the up=false probe misses it, so both PINs are asked; makeCredential's
        # excludeList, under the new key's PIN token, then refuses before anything is made
        served.authenticator.state.credentials[0].cred_protect = 3
        refused = run(
            "enroll", "alice", "--device", spec, "--existing-device", other.spec, "--store", store,
            stdin=PIN + PIN, ok=False,
        )  # fmt: skip
    assert refused.returncode == ExitCode.USAGE and "already enrolled for 'alice'" in refused.stderr
    assert "No credential was made" in refused.stderr
    assert len(served.authenticator.state.credentials) == 1 and len(listed(store)["alice"]["keys"]) == 2


def test_a_credential_id_starting_with_a_dash_is_taken_as_the_id(served, tmp_path):
    store = str(tmp_path / "store")
    dashed = "-" + "A" * 21  # base64url, 16 bytes; no key holds it
    gone = run(
        "key", "credentials", "delete", dashed, "--device", served.spec, "--store", store, "--yes", stdin=PIN, ok=False
    )
    assert gone.returncode == ExitCode.NOT_ENROLLED and f"holds no credential {dashed!r}" in gone.stderr
    bad = run(
        "key", "credentials", "delete", "not base64!", "--device", served.spec, "--store", store, "--yes", ok=False
    )
    assert bad.returncode == ExitCode.USAGE and "is not a credential id" in bad.stderr


@pytest.mark.root
def test_a_pam_sign_in_names_a_labelled_key_in_its_prompt(served_key, tmp_path):
    """Through real libpam (pamtester) and the helper: the PIN prompt names the key by its slot's label."""
    from libhmacunlock.enroll import enroll
    from libhmacunlock.interaction import ScriptedInteraction
    from tests.fixtures.pam_signin import USER, line
    from tests.pam.stack import pam_service, pamtester

    path = tmp_path / "pam-store"
    path.mkdir(mode=0o700)
    enroll(str(path), served_key.spec, ScriptedInteraction([TEST_PIN]), USER, label="desk-nano")
    with pam_service(line(served_key, path)) as service:
        signed_in = pamtester(service, USER, TEST_PIN + "\n")
    assert signed_in.ok, signed_in.output
    assert "PIN of 'desk-nano':" in signed_in.output and "Security key PIN:" not in signed_in.output


def test_libfido2_reads_the_key_after_a_delete(served, tmp_path):
    """fido2-token (Debian's fido2-tools, libfido2) lists the key's RPs over UDP through the benchmark's preload
    shim: the deleted website credential's RP is gone, the machine's stays."""
    import base64
    import shutil

    from bench.ptyrun import run_on_pty
    from bench.shim import ShimBuildFailed, build_shim

    if shutil.which("fido2-token") is None:
        pytest.skip("fido2-token (Debian package fido2-tools) is not installed")
    try:
        shim = build_shim()
    except ShimBuildFailed as exc:
        pytest.skip(f"the libfido2 UDP shim does not build here (needs gcc and libfido2-dev): {exc}")
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", served.spec, "--store", store, stdin=PIN)
    rp_id = listed(store)["alice"]["keys"][0]["rp_id"]
    web = foreign_credential(served)

    def rps() -> str:
        ran = run_on_pty(["fido2-token", "-L", "-r", served.spec], [TEST_PIN], env=shim.environment(served.spec))
        assert ran.returncode == 0, ran.output
        return ran.output.decode(errors="replace")

    before = rps()
    assert "example.com" in before and rp_id in before
    web_b64 = base64.b64encode(base64.urlsafe_b64decode(web + "=" * (-len(web) % 4))).decode()
    run("key", "credentials", "delete", web, "--device", served.spec, "--store", store, "--yes", stdin=PIN)
    after = rps()
    assert "example.com" not in after and rp_id in after and web_b64 not in after
