"""credProtect 3 and the PIN guard (issue 16): the guard finds the key holding the user's credential with an
up=false probe (no PIN) before it asks the PIN, and a key hides a credProtect-3 credential from that probe. So
enroll refuses level 3 before any PIN, and a record holding a level-3 slot (written by an older version) says so,
with the fix, before any PIN -- not "no key holds the credential". Real CLI, software key over UDP."""

from __future__ import annotations

import pytest

import libhmacunlock.enroll as enroll_module
from libhmacunlock.errors import CredentialHiddenFromProbe, ExitCode
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.store import Store
from tests.cli_run import run
from tests.fixtures.softkey import TEST_PIN

PIN = TEST_PIN + "\n"
WRONG = "99999999\n"


@pytest.fixture
def served(udp_softkey):
    run("key", "set-pin", "--device", udp_softkey.spec, stdin=PIN)
    return udp_softkey


def test_enroll_refuses_cred_protect_3_before_any_pin(served, tmp_path):
    store = tmp_path / "store"
    retries = served.authenticator.state.pin_retries
    counts = sum(served.authenticator.message_counts.values())
    refused = run("enroll", "alice", "--device", served.spec, "--store", str(store), "--cred-protect", "3", ok=False)
    assert refused.returncode == ExitCode.USAGE, refused.stderr
    assert "credProtect 3 is refused" in refused.stderr and "Nothing was asked of the key" in refused.stderr
    assert sum(served.authenticator.message_counts.values()) == counts  # not one message to the key
    assert served.authenticator.state.pin_retries == retries and not served.authenticator.state.credentials
    assert not (store / "alice.json").exists()
    run("enroll", "alice", "--device", served.spec, "--store", str(store), "--cred-protect", "1", stdin=PIN)
    assert Store(store).read("alice").slots[0].cred_protect == 1
    run("unlock", "alice", "--device", served.spec, "--store", str(store), stdin=PIN)  # level 1 is found: unlocks


def _enroll_level_3(store: str, spec: str, user: str, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> None:
    """A slot as an older version made it (it let --cred-protect 3 through): the level check switched off, the
    rest of the enrollment real."""
    with monkeypatch.context() as m:
        m.setattr(enroll_module, "check_cred_protect", lambda level: None)
        enroll_module.enroll(store, spec, ScriptedInteraction([TEST_PIN, TEST_PIN]), user, cred_protect=3, **kwargs)


def test_a_cred_protect_3_slot_is_named_as_the_cause_before_any_pin(served, tmp_path, monkeypatch):
    store = str(tmp_path / "store")
    _enroll_level_3(store, served.spec, "alice", monkeypatch)
    assert Store(store).read("alice").slots[0].cred_protect == 3
    assert served.authenticator.state.credentials[0].cred_protect == 3
    retries = served.authenticator.state.pin_retries
    for who in (["alice"], []):  # named, and usernameless
        hidden = run("unlock", *who, "--device", served.spec, "--store", store, stdin=WRONG * 2, ok=False)
        assert hidden.returncode == ExitCode.NOT_ENROLLED, hidden.stderr
        assert "credProtect 3" in hidden.stderr and "alice's " in hidden.stderr, hidden.stderr
        assert "enroll the key again with the default credProtect 2" in hidden.stderr
        assert "No PIN was asked" in hidden.stderr and "PIN of" not in hidden.stderr
    assert served.authenticator.state.pin_retries == retries  # the wrong PIN on stdin was never sent


def test_the_fix_named_works_remove_the_slot_and_enroll_the_key_again(served, tmp_path, monkeypatch):
    from libhmacunlock.softkey.udp import running_udp_softkey

    store = str(tmp_path / "store")
    with running_udp_softkey(tmp_path / "other.json") as other:
        run("key", "set-pin", "--device", other.spec, stdin=PIN)
        run("enroll", "alice", "--device", other.spec, "--store", store, stdin=PIN)
        _enroll_level_3(store, served.spec, "alice", monkeypatch, existing_device=other.spec)
        hidden = Store(store).read("alice").slots[1]
        assert hidden.cred_protect == 3
        refused = run("unlock", "alice", "--device", served.spec, "--store", store, stdin=WRONG, ok=False)
        assert f"hmacunlock remove alice --credential {hidden.credential_id_text}" in refused.stderr, refused.stderr
        run("remove", "alice", "--credential", hidden.credential_id_text, "--store", store, "--yes")
        run(
            "enroll", "alice", "--device", served.spec, "--existing-device", other.spec, "--store", store, stdin=PIN * 2
        )
    assert [s.cred_protect for s in Store(store).read("alice").slots] == [2, 2]
    unlocked = run("unlock", "alice", "--device", served.spec, "--store", store, stdin=PIN)
    assert "unlocked alice" in unlocked.stdout


def test_the_error_is_still_a_no_key_holds_credential_for_callers_that_catch_that():
    assert issubclass(CredentialHiddenFromProbe, enroll_module.HmacUnlockError)
    from libhmacunlock.errors import NoKeyHoldsCredential

    err = CredentialHiddenFromProbe([("alice", "AAAA")], "alice")
    assert isinstance(err, NoKeyHoldsCredential) and err.user == "alice" and err.exit_code == ExitCode.NOT_ENROLLED
