"""Issue 16, destructive steps: each asks first at a terminal (saying what goes and what becomes unopenable), needs
--yes without one (refused before any PIN), and the user's last way in is kept while volumes or profiles depend on
it, unless --force. Through the real `hmacunlock` command, the software key over UDP, a real pty for the questions
and real cryptsetup on a LUKS2 file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from libhmacunlock.errors import ExitCode, RecordUnreadable
from libhmacunlock.records import Record, Target
from libhmacunlock.store import Store
from tests.cli_run import run
from tests.fixtures.luks import FIRST_PASSPHRASE, cryptsetup_accepts, dump, make_volume
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.terminal import Terminal

PIN = TEST_PIN + "\n"
WRONG_PIN = "97531975"


@pytest.fixture
def served(udp_softkey):
    run("key", "set-pin", "--device", udp_softkey.spec, stdin=PIN)
    return udp_softkey, udp_softkey.spec


@pytest.fixture
def alice(served, tmp_path):
    """(key, spec, store, alice's credential id): alice enrolled with one key."""
    key, spec = served
    store = str(tmp_path / "store")
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN)
    return key, spec, store, listed(store)["keys"][0]["credential_id"]


def listed(store: str) -> dict:
    return json.loads(run("list", "--store", store, "--json").stdout)["users"][0]


def record_bytes(store: str) -> bytes:
    return (Path(store) / "alice.json").read_bytes()


def luks_enrolled(spec: str, store: str, tmp_path: Path):
    volume = make_volume(tmp_path / "sdb2.img")
    run("luks", "enroll", volume.path, "alice", "--device", spec, "--store", store,
        stdin=PIN + FIRST_PASSPHRASE.decode() + "\n")  # fmt: skip
    return volume


def answer(argv: list[str], reply: str) -> tuple[int, str]:
    term = Terminal(argv)
    term.expect(rb"Type 'yes' to go on: ")
    term.send(reply)
    code = term.finish()
    return code, term.output.decode(errors="replace")


# --- the question at a terminal -------------------------------------------------------------------------------


def test_remove_at_a_terminal_says_what_goes_and_no_keeps_everything(alice):
    _, _, store, credential = alice
    before = record_bytes(store)
    code, shown = answer(["remove", "alice", "--store", store], "no")
    assert code == ExitCode.NOT_CONFIRMED == 13
    assert "This removes alice's whole record (1 security key, 0 recovery slots)" in shown, shown
    assert "No volume or profile is noted in the record" in shown and "Not confirmed: nothing was changed" in shown
    assert record_bytes(store) == before
    code, shown = answer(["remove", "alice", "--store", store, "--credential", credential], "yes")
    assert code == 0 and "the last way to open their unlock key" in shown, shown
    assert listed(store)["keys"] == []


def test_the_end_of_input_at_the_question_is_no(alice):
    _, _, store, _ = alice
    before = record_bytes(store)
    term = Terminal(["remove", "alice", "--store", store])
    term.expect(rb"Type 'yes' to go on: ")
    os.write(term.fd, b"\x04")  # Ctrl-D
    assert term.finish() == ExitCode.NOT_CONFIRMED
    assert record_bytes(store) == before


def test_yes_skips_the_question_and_no_terminal_without_it_is_refused(alice):
    _, _, store, _ = alice
    before = record_bytes(store)
    refused = run("remove", "alice", "--store", store, ok=False)
    assert refused.returncode == ExitCode.USAGE
    assert "stdin is not a terminal, so nobody can confirm it" in refused.stderr
    assert "'hmacunlock remove alice --yes'" in refused.stderr and "This removes alice's whole record" in refused.stderr
    assert record_bytes(store) == before
    term = Terminal(["remove", "alice", "--store", store, "--yes"])  # at a terminal too: no question
    assert term.finish() == 0 and b"Type 'yes'" not in term.output and b"removed alice" in term.output
    assert not (Path(store) / "alice.json").exists()


def test_a_refusal_without_a_terminal_comes_before_any_pin(alice, tmp_path):
    key, spec, store, _ = alice
    volume = luks_enrolled(spec, store, tmp_path)
    retries, slots = key.authenticator.state.pin_retries, list(dump(volume)["keyslots"])
    # a wrong PIN on stdin: had it been sent, the key's counter would show it
    refused = run("luks", "remove", volume.path, "alice", "--sweep", "--device", spec, "--store", store,
                  stdin=WRONG_PIN + "\n", ok=False)  # fmt: skip
    assert refused.returncode == ExitCode.USAGE and "--yes" in refused.stderr, refused.stderr
    assert "PIN" not in refused.stderr
    assert key.authenticator.state.pin_retries == retries and list(dump(volume)["keyslots"]) == slots
    ran = run("luks", "remove", volume.path, "alice", "--sweep", "--yes", "--device", spec, "--store", store,
              stdin=PIN)  # fmt: skip
    assert "Removed 1 keyslot of alice" in ran.stderr
    assert list(dump(volume)["keyslots"]) == ["0"]


def test_luks_remove_at_a_terminal_says_which_keyslots_still_open_the_volume(alice, tmp_path):
    _, spec, store, _ = alice
    volume = luks_enrolled(spec, store, tmp_path)
    code, shown = answer(["luks", "remove", volume.path, "alice", "--store", store], "nope")
    assert code == ExitCode.NOT_CONFIRMED
    assert f"This removes alice's keyslots of {volume.path} (1)" in shown, shown
    assert f"{volume.path} still opens with its other keyslot: 0 (a passphrase)" in shown
    assert list(dump(volume)["keyslots"]) == ["0", "1"]


def test_recovery_remove_at_a_terminal_warns_of_the_last_recovery_slot(alice):
    _, spec, store, _ = alice
    run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN)
    slot = listed(store)["recovery"][0]["id"]
    code, shown = answer(["recovery", "remove", "alice", slot, "--store", store], "no")
    assert code == ExitCode.NOT_CONFIRMED
    assert f"This removes alice's recovery slot {slot}" in shown
    assert "It is alice's last recovery slot: if their security keys are lost, nothing opens" in shown
    assert listed(store)["recovery"][0]["id"] == slot


# --- the last way in while a volume depends on it ----------------------------------------------------------------


def test_the_last_key_is_kept_while_a_luks_volume_depends_on_it_unless_forced(alice, tmp_path):
    _, spec, store, credential = alice
    volume = luks_enrolled(spec, store, tmp_path)
    noted = Store(store).read("alice").dependents()
    assert [(t.type, t.path, t.uuid) for t in noted] == [("luks", volume.path, volume.uuid())]
    assert [(t["type"], t["path"], t["token"]) for t in listed(store)["targets"]] == [
        ("luks", volume.path, noted[0].token)
    ]
    assert f"opens LUKS2 volume {volume.path}" in run("list", "--store", store).stdout
    before = record_bytes(store)
    for argv in (["--credential", credential], []):
        refused = run("remove", "alice", "--store", store, *argv, "--yes", ok=False)
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        said = "is the last way to open alice's unlock key" if argv else "Removing alice's record takes every way"
        assert said in refused.stderr, refused.stderr
        assert f"{volume.path} (LUKS2 volume, token " in refused.stderr and "--force" in refused.stderr
        assert record_bytes(store) == before
    code, shown = answer(["remove", "alice", "--store", store, "--credential", credential, "--force"], "yes")
    assert code == 0, shown
    assert f"{volume.path} (LUKS2 volume, token" in shown and "only with another of its keyslots' passphrases" in shown
    assert listed(store)["keys"] == []
    assert cryptsetup_accepts(volume, FIRST_PASSPHRASE, keyslot=0)  # the volume's own passphrase still works


def test_with_a_recovery_slot_the_last_key_goes_and_the_question_says_recovery_is_the_only_way(alice, tmp_path):
    _, spec, store, credential = alice
    volume = luks_enrolled(spec, store, tmp_path)
    added = run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN).stdout
    recovery_key = added.rstrip("\n").splitlines()[-1]
    code, shown = answer(["remove", "alice", "--store", store, "--credential", credential], "yes")
    assert code == 0, shown
    assert "This removes alice's last security key" in shown
    assert f"{volume.path} (LUKS2 volume, token" in shown and "will no longer open with a key" in shown
    assert "only the recovery key or passphrase (slot" in shown
    assert listed(store)["keys"] == []
    # and the recovery key still opens the volume
    uk = run("recovery", "unlock", "alice", "--store", store, "--key-file", "-", stdin=recovery_key + "\n")
    assert uk.returncode == 0
    slot = listed(store)["recovery"][0]["id"]
    refused = run("recovery", "remove", "alice", slot, "--store", store, "--yes", ok=False)
    assert refused.returncode == ExitCode.USAGE and f"Recovery slot {slot} is the last way" in refused.stderr


def test_a_profile_set_up_with_the_key_keeps_the_last_key_unless_forced(alice, tmp_path):
    from tests.fixtures.fscrypt import loop_ext4

    _, spec, store, credential = alice
    with loop_ext4(tmp_path) as mnt:
        home = mnt / "alice"
        home.mkdir()
        run("profile", "setup", "alice", str(home), "--device", spec, "--store", store, stdin=PIN)
        assert Store(store).read("alice").profiles() == (str(home),)
        refused = run("remove", "alice", "--store", store, "--credential", credential, "--yes", ok=False)
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        assert f"{home} (profile) would not open at all" in refused.stderr
        run("remove", "alice", "--store", store, "--credential", credential, "--yes", "--force")
        assert listed(store)["keys"] == []


def test_luks_remove_drops_the_volume_from_the_record(alice, tmp_path):
    _, spec, store, credential = alice
    volume = luks_enrolled(spec, store, tmp_path)
    run("luks", "remove", volume.path, "alice", "--store", store, "--yes")
    assert Store(store).read("alice").dependents() == ()
    run("remove", "alice", "--store", store, "--credential", credential, "--yes")  # nothing depends on it now
    assert listed(store)["keys"] == []


def test_a_note_the_volume_contradicts_no_longer_counts_but_an_absent_volume_does(alice, tmp_path):
    import subprocess

    _, spec, store, credential = alice
    volume = luks_enrolled(spec, store, tmp_path)
    token = Store(store).read("alice").dependents()[0].token
    moved = Path(volume.path).rename(tmp_path / "unplugged.img")  # the disk is not there: the note still counts
    refused = run("remove", "alice", "--store", store, "--credential", credential, "--yes", ok=False)
    assert refused.returncode == ExitCode.USAGE and "is the last way to open" in refused.stderr
    moved.rename(volume.path)
    # alice's token removed behind hmacunlock's back: the volume itself says it no longer depends on her key
    subprocess.run(["cryptsetup", "token", "remove", "--token-id", str(token), volume.path], check=True)
    run("remove", "alice", "--store", store, "--credential", credential, "--yes")
    assert listed(store)["keys"] == []


def test_a_key_file_of_another_unlock_key_notes_nothing(alice, tmp_path):
    _, _, store, _ = alice
    volume = make_volume(tmp_path / "other.img")
    run(
        "luks",
        "enroll",
        volume.path,
        "alice",
        "--store",
        store,
        "--key-file",
        "-",
        stdin="x" * 32 + FIRST_PASSPHRASE.decode() + "\n",
    )  # fmt: skip: 32 bytes, not alice's unlock key
    assert Store(store).read("alice").dependents() == ()


# --- the record's targets --------------------------------------------------------------------------------------


def test_targets_of_known_types_are_checked_and_others_kept(tmp_path):
    store = Store(tmp_path / "store")
    target = Target("luks", "/dev/sdb2", uuid="1234", token=1, created="t")
    record = Record("alice", targets=({"type": "a-newer-kind", "x": 1},)).with_target(target)
    store.write(record)
    read = store.read("alice")
    assert read.dependents() == (target,) and read.targets[0] == {"type": "a-newer-kind", "x": 1}
    assert read.with_target(Target("luks", "/dev/disk/by-uuid/1234", uuid="1234")).dependents()[0].path == (
        "/dev/disk/by-uuid/1234"
    )  # the same volume (by UUID): one note, replaced
    assert read.without_target(target).dependents() == ()
    for bad in ({"type": "luks"}, {"type": "fscrypt", "path": "relative/dir"}, {"type": "luks", "path": "/x",
                                                                                "token": "1"}):  # fmt: skip
        path = store.record_path("alice")
        data = json.loads(path.read_bytes())
        data["targets"] = [bad]
        path.write_text(json.dumps(data))
        with pytest.raises(RecordUnreadable, match="target 0"):
            store.read("alice")


def test_every_command_that_removes_deletes_or_resets_takes_yes():
    import argparse

    from hmacunlock_cli.main import build_parser

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*path, name))

    destructive = {p: sub for p, sub in walk(build_parser(), ()) if p and p[-1] in ("remove", "delete", "reset")}
    assert {("remove",), ("recovery", "remove"), ("luks", "remove")} <= set(destructive)
    missing = [" ".join(p) for p, sub in destructive.items() if "--yes" not in sub._option_string_actions]
    assert not missing, f"destructive commands without --yes: {missing}"
