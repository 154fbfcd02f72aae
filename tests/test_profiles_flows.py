"""The client on every key family (docs/keys.md): each flow on each compatible profile of the software key, and the
others refused by name before a PIN is asked.

Compatible: ctap21, yubikey-5.2 (PIN protocol 1, legacy getPinToken, credentialMgmtPreview), yubikey-5.7, solo1
(CTAP 2.0, no credential management, one hmac-secret secret), bio (the finger, the PIN as fallback), slow (a real
key's latency and keepalives). Refused: no-hmac-secret, no-rk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from libhmacunlock.device import Key
from libhmacunlock.enroll import enroll
from libhmacunlock.errors import ExitCode, KeyLacksFeature
from libhmacunlock.interaction import Purpose, ScriptedInteraction
from libhmacunlock.recovery import add_recovery, recovery_unlock
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock
from tests.fixtures.softkey import REFUSED_PROFILES, TEST_PIN, make_profiled_softkey

# --- the library, in process --------------------------------------------------------------------------------


def _pin(*extra: str, choice: str | None = None) -> ScriptedInteraction:
    return ScriptedInteraction([TEST_PIN, *extra], choice=choice)


def test_enroll_and_unlock_with_rotation(tmp_path, compatible_profile):
    key = make_profiled_softkey(tmp_path / "k.json", compatible_profile)
    store = Store(tmp_path / "store")
    uk = enroll(store, key, _pin(), "alice").unlock_key
    salt = store.read("alice").slots[0].salt
    result = unlock(store, key, _pin(), user="alice")
    assert result.unlock_key == uk and result.rotated and store.read("alice").slots[0].salt != salt
    assert unlock(store, key, _pin(), user="alice").unlock_key == uk  # the rotated salt opens it again


def test_usernameless_with_two_accounts(tmp_path, compatible_profile):
    key = make_profiled_softkey(tmp_path / "k.json", compatible_profile)
    store = Store(tmp_path / "store")
    alice = enroll(store, key, _pin(), "alice").unlock_key
    bob = enroll(store, key, _pin(), "bob").unlock_key
    chooser = _pin(choice="bob")
    result = unlock(store, key, chooser, user=None)
    assert (result.user, result.unlock_key) == ("bob", bob) and chooser.choices == [["alice", "bob"]]
    assert unlock(store, key, _pin(choice="alice"), user=None).unlock_key == alice


def test_backup_key_and_recovery(tmp_path, compatible_profile):
    first = make_profiled_softkey(tmp_path / "k1.json", compatible_profile)
    backup = make_profiled_softkey(tmp_path / "k2.json", compatible_profile)
    store = Store(tmp_path / "store")
    uk = enroll(store, first, _pin(), "alice").unlock_key
    # the backup key: authorised by the first key (its PIN first), then its own PIN
    enroll(store, backup, _pin(TEST_PIN), "alice", existing_device=first)
    assert unlock(store, backup, _pin(), user="alice").unlock_key == uk
    added = add_recovery(store, backup, _pin(), "alice")
    assert added.recovery_key is not None
    assert recovery_unlock(store, "alice", ScriptedInteraction([added.recovery_key])).unlock_key == uk


def test_refused_profiles_are_named_before_the_pin_is_asked(tmp_path, refused_profile):
    key = make_profiled_softkey(tmp_path / "k.json", refused_profile)
    asked = _pin()
    with pytest.raises(KeyLacksFeature, match=REFUSED_PROFILES[refused_profile]) as err:
        enroll(Store(tmp_path / "store"), key, asked, "alice")
    assert asked.asked == []  # no PIN attempt spent on a key that cannot work
    assert REFUSED_PROFILES[refused_profile] in str(err.value)
    assert not Key.from_device(key).features().microsoft_compatible


# --- built-in UV (bio): the finger, the PIN as fallback ----------------------------------------------------


def test_bio_uses_the_finger_and_never_asks_the_pin(tmp_path):
    key = make_profiled_softkey(tmp_path / "k.json", "bio")
    store = Store(tmp_path / "store")
    nobody = ScriptedInteraction([])  # no PIN to give: the finger must do
    uk = enroll(store, key, nobody, "alice").unlock_key
    again = ScriptedInteraction([])
    assert unlock(store, key, again, user="alice").unlock_key == uk
    assert nobody.asked == [] and again.asked == []
    assert again.touched  # the person is told to put the finger on the key


def test_bio_falls_back_to_the_pin_when_the_finger_is_blocked(tmp_path):
    key = make_profiled_softkey(tmp_path / "k.json", "bio")
    store = Store(tmp_path / "store")
    uk = enroll(store, key, ScriptedInteraction([]), "alice").unlock_key
    key.authenticator.pin.uv_retries = 0  # three mismatches: the key takes only the PIN now
    asked = _pin()
    assert unlock(store, key, asked, user="alice").unlock_key == uk
    assert asked.asked == [Purpose.UNLOCK]  # the PIN, once
    # the PIN unblocked the finger (CTAP 2.1): the next unlock needs no PIN again
    assert key.authenticator.pin.uv_retries == 3
    assert unlock(store, key, ScriptedInteraction([]), user="alice").unlock_key == uk


# --- the CLI over UDP: LUKS (our token and systemd's), the encrypted profile, PAM ----------------------------


class Served:
    def __init__(self, spec: str, store: Path, profile: str) -> None:
        self.spec, self.store, self.profile = spec, store, profile

    @property
    def pin_line(self) -> bytes:
        """What a flow reads for the PIN: nothing on bio, whose finger verifies (stdin answers the prompts asked)."""
        return b"" if self.profile == "bio" else PIN_LINE

    def run(self, *argv: str, stdin: bytes = b"", store: bool = True) -> subprocess.CompletedProcess:
        words = [*argv, "--device", self.spec] + (["--store", str(self.store)] if store else [])
        return subprocess.run(
            [sys.executable, "-m", "hmacunlock_cli", *words], input=stdin, capture_output=True, timeout=180
        )

    def ok(self, *argv: str, stdin: bytes = b"", store: bool = True) -> subprocess.CompletedProcess:
        ran = self.run(*argv, stdin=stdin, store=store)
        assert ran.returncode == 0, ran.stderr.decode()
        return ran


def served(tmp_path: Path, profile: str) -> Iterator[Served]:
    from libhmacunlock.softkey.udp import running_udp_softkey

    state = tmp_path / "softkey.json"
    make_profiled_softkey(state, profile)
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    with running_udp_softkey(state, profile=profile) as server:
        yield Served(server.spec, store, profile)


@pytest.fixture
def key_served(tmp_path, compatible_profile) -> Iterator[Served]:
    yield from served(tmp_path, compatible_profile)


PIN_LINE = TEST_PIN.encode() + b"\n"


def test_luks_our_token_and_systemds_token(key_served, tmp_path):
    from tests.fixtures.luks import FIRST_PASSPHRASE, make_volume

    ours, theirs = make_volume(tmp_path / "ours.luks"), make_volume(tmp_path / "systemd.luks")
    key_served.ok("enroll", "alice", stdin=key_served.pin_line)
    key_served.ok("luks", "enroll", ours.path, "alice", stdin=key_served.pin_line + FIRST_PASSPHRASE + b"\n")
    key_served.ok("luks", "unlock", ours.path, "alice", "--test-passphrase", stdin=key_served.pin_line)
    key_served.ok(
        "luks", "enroll", theirs.path, "--systemd", stdin=key_served.pin_line + FIRST_PASSPHRASE + b"\n", store=False
    )
    (token,) = theirs.systemd_tokens()
    ran = key_served.ok("luks", "unlock", theirs.path, "--test-passphrase", stdin=key_served.pin_line, store=False)
    assert f"keyslot {token.keyslot}".encode() in ran.stdout + ran.stderr


def test_cli_refuses_a_key_without_a_feature_by_name(tmp_path, refused_profile):
    for key in served(tmp_path, refused_profile):
        ran = key.run("enroll", "alice", stdin=PIN_LINE)
        assert ran.returncode == ExitCode.KEY_UNSUITABLE
        assert REFUSED_PROFILES[refused_profile].encode() in ran.stderr
        info = key.ok("key", "info", store=False).stdout.decode()
        assert "Microsoft-compatible: no" in info and "compatible with hmacunlock: NO" in info


def test_key_info_names_the_family(tmp_path, compatible_profile):
    for key in served(tmp_path, compatible_profile):
        info = key.ok("key", "info", store=False).stdout.decode()
        assert "Microsoft-compatible: yes" in info and "compatible with hmacunlock: yes" in info
        if compatible_profile == "yubikey-5.7":
            assert "firmware: 5.7.0" in info
        if compatible_profile == "bio":
            assert "fingerprint (built-in user verification): yes" in info
        if compatible_profile == "solo1":
            assert "credential management: no" in info and "CTAP versions: FIDO_2_0;" in info


def test_encrypted_profile(key_served, tmp_path):
    from libhmacunlock.targets import fscrypt
    from tests.fixtures.fscrypt import NOTE, loop_ext4

    with loop_ext4(tmp_path) as mnt:
        home = mnt / "alice"
        home.mkdir()
        key_served.ok("enroll", "alice", stdin=key_served.pin_line)
        key_served.ok("profile", "setup", "alice", str(home), stdin=key_served.pin_line)
        (home / "notes.txt").write_bytes(NOTE)
        assert fscrypt.lock_profile(str(home)) is fscrypt.Status.LOCKED and "notes.txt" not in os.listdir(home)
        key_served.ok("profile", "unlock", "alice", str(home), stdin=key_served.pin_line)
        assert (home / "notes.txt").read_bytes() == NOTE


@pytest.mark.root
def test_pam_sign_in(key_served):
    from tests.pam.stack import module_line, pam_service, pamtester, require_pam

    require_pam()
    user = "hmu-prof-alice"
    enroll(str(key_served.store), key_served.spec, ScriptedInteraction([TEST_PIN]), user)
    line = module_line("required", store=key_served.store, device=key_served.spec)
    with pam_service(line) as service:
        run = pamtester(service, user, TEST_PIN + "\n")
        assert run.ok, run.output


def test_a_uv_required_systemd_token_needs_a_key_with_a_finger(tmp_path):
    """fido2-uv-required: a key without built-in UV is refused by name before any PIN is asked (a bio key opens it:
    tests/test_systemd_tools.py::test_systemd_user_verification_volume_opens_with_the_finger)."""
    import secrets

    from libhmacunlock import systemd_fido2
    from libhmacunlock.errors import TargetError
    from libhmacunlock.targets import luks
    from tests.fixtures.luks import FIRST_PASSPHRASE, make_volume

    volume = make_volume(tmp_path / "vol.luks")
    slot = volume.add_keyslot(b"x" * 44, luks.Existing(passphrase=FIRST_PASSPHRASE))
    token = luks.SystemdFido2Token(
        keyslot=slot, credential_id=secrets.token_bytes(64), salt=secrets.token_bytes(32), uv_required=True
    )
    volume.import_token(token.to_json())
    asked = _pin()
    with pytest.raises(TargetError, match="built-in user verification"):
        systemd_fido2.passphrase(volume, make_profiled_softkey(tmp_path / "k.json", "ctap21"), asked)
    assert asked.asked == []
