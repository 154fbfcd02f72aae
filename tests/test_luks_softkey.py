"""End to end: the software key over UDP, the library's enrollment, and `hmacunlock luks` on a real LUKS2 header.

The PIN reaches each command on stdin (the non-terminal input contract). The systemd-fido2 passphrase is checked
against an hmac-secret output obtained independently, through python-fido2's own Fido2Client.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2 import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.extensions import HmacSecretExtension
from fido2.ctap2.pin import ClientPin
from fido2.utils import websafe_decode

from libhmacunlock.errors import ExitCode
from libhmacunlock.keys import derive
from libhmacunlock.targets import luks
from libhmacunlock.udp import open_udp_device, parse_udp_spec
from tests.fixtures.luks import FIRST_PASSPHRASE, cryptsetup_accepts, dump, make_volume
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey

WRONG_PIN = "135790"


class Env:
    def __init__(self, spec: str, store: Path, volume: luks.Volume) -> None:
        self.spec, self.store, self.volume = spec, store, volume

    def run(self, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        words = list(argv)
        if argv[0] in ("enroll", "unlock") or argv[:2] in (
            ("luks", "enroll"),
            ("luks", "unlock"),
            ("luks", "keyscript"),
        ):
            words += ["--device", self.spec, "--store", str(self.store)]
        return subprocess.run(
            [sys.executable, "-m", "hmacunlock_cli", *words], input=stdin, capture_output=True, timeout=120
        )

    def ok(self, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        ran = self.run(*argv, stdin=stdin)
        assert ran.returncode == 0, ran.stderr.decode()
        return ran


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:
    from libhmacunlock.softkey.udp import running_udp_softkey

    state = tmp_path / "softkey.json"
    make_pinned_softkey(state)
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    volume = make_volume(tmp_path / "vol.luks")
    with running_udp_softkey(state) as server:
        yield Env(server.spec, store, volume)


def pin_line(pin: str = TEST_PIN) -> bytes:
    return pin.encode() + b"\n"


def unlock_key(env: Env, user: str) -> bytes:
    """The user's unlock key as the library's own command gives it (not through our target code)."""
    ran = env.ok("unlock", user, "--key-file", "-", stdin=pin_line())
    assert len(ran.stdout) == 32
    return ran.stdout


# --- our token --------------------------------------------------------------------------------------------------


def test_enroll_then_test_passphrase_with_the_pin_and_not_with_a_wrong_one(env):
    env.ok("enroll", "alice", stdin=pin_line())
    env.ok("luks", "enroll", env.volume.path, "alice", stdin=pin_line() + FIRST_PASSPHRASE + b"\n")
    token = env.volume.token_for("alice")
    assert token is not None and token.keyslot == 1

    # The keyslot's passphrase is base64(derive(UK, "luks:<uuid>")) for alice's UK, whoever computes it.
    uk = unlock_key(env, "alice")
    expected = base64.b64encode(derive(uk, f"luks:{env.volume.uuid()}"))
    assert cryptsetup_accepts(env.volume, expected, keyslot=token.keyslot)

    ran = env.ok("luks", "unlock", env.volume.path, "alice", "--test-passphrase", stdin=pin_line())
    assert ran.stdout == b""
    ran = env.run("luks", "unlock", env.volume.path, "alice", "--test-passphrase", stdin=pin_line(WRONG_PIN))
    assert ran.returncode == ExitCode.WRONG_PIN and b"attempt" in ran.stderr
    ran = env.ok("luks", "unlock", env.volume.path, "--test-passphrase", stdin=pin_line())  # usernameless


def test_keyscript_prints_the_passphrase_after_the_pin(env):
    env.ok("enroll", "alice", stdin=pin_line())
    env.ok("luks", "enroll", env.volume.path, "alice", stdin=pin_line() + FIRST_PASSPHRASE + b"\n")
    ran = env.ok("luks", "keyscript", env.volume.path, "alice", stdin=pin_line())
    assert len(ran.stdout) == 44 and cryptsetup_accepts(env.volume, ran.stdout, keyslot=1)
    assert b"Touch" in ran.stderr  # messages go to stderr, never into the passphrase


def test_a_wrong_pin_at_enrollment_changes_nothing(env):
    env.ok("enroll", "alice", stdin=pin_line())
    ran = env.run("luks", "enroll", env.volume.path, "alice", stdin=pin_line(WRONG_PIN) + FIRST_PASSPHRASE + b"\n")
    assert ran.returncode == ExitCode.WRONG_PIN
    meta = dump(env.volume)
    assert list(meta["keyslots"]) == ["0"] and meta["tokens"] == {}


# --- systemd-fido2 ----------------------------------------------------------------------------------------------


class _Pin(UserInteraction):
    def request_pin(self, permissions, rp_id):  # type: ignore[no-untyped-def]
        return TEST_PIN


def hmac_output_through_python_fido2(spec: str, credential_id: bytes, salt: bytes) -> bytes:
    """salt1 through python-fido2's Fido2Client and its hmac-secret extension, PIN given (uv), as systemd does."""
    device = open_udp_device(*parse_udp_spec(spec))
    try:
        client = Fido2Client(
            device,
            DefaultClientDataCollector("https://io.systemd.cryptsetup"),
            user_interaction=_Pin(),
            extensions=[HmacSecretExtension(allow_hmac_secret=True)],
        )
        result = client.get_assertion(
            {
                "rpId": "io.systemd.cryptsetup",
                "challenge": b"\0" * 32,
                "allowCredentials": [{"type": "public-key", "id": credential_id}],
                "userVerification": "required",
                "extensions": {"hmacGetSecret": {"salt1": salt}},
            }
        ).get_response(0)
        output1 = result.client_extension_results["hmacGetSecret"]["output1"]  # JSON form: base64url
        return websafe_decode(output1) if isinstance(output1, str) else bytes(output1)
    finally:
        device.close()


def resident_rp_ids(spec: str) -> list[str]:
    device = open_udp_device(*parse_udp_spec(spec))
    try:
        ctap = Ctap2(device)
        client_pin = ClientPin(ctap)
        token = client_pin.get_pin_token(TEST_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
        credman = CredentialManagement(ctap, client_pin.protocol, token)
        return [rp[CredentialManagement.RESULT.RP]["id"] for rp in credman.enumerate_rps()]
    finally:
        device.close()


def test_systemd_enrollment_is_systemds_format_and_python_fido2_opens_it(env):
    env.ok(
        "luks",
        "enroll",
        env.volume.path,
        "--systemd",
        "--device",
        env.spec,
        stdin=pin_line() + FIRST_PASSPHRASE + b"\n",
    )
    (token,) = env.volume.systemd_tokens()
    raw = dump(env.volume)["tokens"][str(token.token_id)]
    assert set(raw) == {
        "type",
        "keyslots",
        "fido2-credential",
        "fido2-salt",
        "fido2-rp",
        "fido2-clientPin-required",
        "fido2-up-required",
        "fido2-uv-required",
    }
    assert raw["type"] == "systemd-fido2" and raw["keyslots"] == [str(token.keyslot)]
    assert raw["fido2-rp"] == "io.systemd.cryptsetup"
    assert (raw["fido2-clientPin-required"], raw["fido2-up-required"], raw["fido2-uv-required"]) == (True, True, False)
    assert len(base64.b64decode(raw["fido2-salt"])) == 32 and len(base64.b64decode(raw["fido2-credential"])) >= 16
    assert "io.systemd.cryptsetup" not in resident_rp_ids(env.spec)  # systemd's credential is not resident

    output = hmac_output_through_python_fido2(env.spec, token.credential_id, token.salt)
    assert cryptsetup_accepts(env.volume, base64.b64encode(output), keyslot=token.keyslot)

    env.ok("luks", "unlock", env.volume.path, "--test-passphrase", "--device", env.spec, stdin=pin_line())
    ran = env.run(
        "luks", "unlock", env.volume.path, "--test-passphrase", "--device", env.spec, stdin=pin_line(WRONG_PIN)
    )
    assert ran.returncode == ExitCode.WRONG_PIN

    refused = env.run("luks", "remove", env.volume.path, "--systemd")  # no terminal, no --yes: nothing goes
    assert refused.returncode == ExitCode.USAGE and b"its systemd-fido2 token" in refused.stderr, refused.stderr
    assert list(dump(env.volume)["keyslots"]) == ["0", str(token.keyslot)]
    env.ok("luks", "remove", env.volume.path, "--systemd", "--yes")
    meta = dump(env.volume)
    assert list(meta["keyslots"]) == ["0"] and meta["tokens"] == {}


def test_a_systemd_token_enrolled_without_the_pin_opens_without_it(env):
    """As `systemd-cryptenroll --fido2-with-client-pin=no` leaves it: the secret is the key's no-PIN one."""
    device = open_udp_device(*parse_udp_spec(env.spec))
    try:
        client = Fido2Client(
            device,
            DefaultClientDataCollector("https://io.systemd.cryptsetup"),
            extensions=[HmacSecretExtension(allow_hmac_secret=True)],
        )
        made = client.make_credential(
            {
                "rp": {"id": "io.systemd.cryptsetup", "name": "Encrypted Volume"},
                "user": {"id": env.volume.uuid().encode(), "name": env.volume.uuid()},
                "challenge": b"\0" * 32,
                "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
                "authenticatorSelection": {"residentKey": "discouraged", "userVerification": "discouraged"},
                "extensions": {"hmacCreateSecret": True},
            }
        )
        credential_id = made.response.attestation_object.auth_data.credential_data.credential_id
        salt = os.urandom(32)
        result = client.get_assertion(
            {
                "rpId": "io.systemd.cryptsetup",
                "challenge": b"\0" * 32,
                "userVerification": "discouraged",
                "allowCredentials": [{"type": "public-key", "id": credential_id}],
                "extensions": {"hmacGetSecret": {"salt1": salt}},
            }
        ).get_response(0)
        output1 = result.client_extension_results["hmacGetSecret"]["output1"]
        output = websafe_decode(output1) if isinstance(output1, str) else bytes(output1)
    finally:
        device.close()
    assert output != hmac_output_through_python_fido2(env.spec, credential_id, salt)  # with the PIN: another one
    slot = env.volume.add_keyslot(base64.b64encode(output), luks.Existing(passphrase=FIRST_PASSPHRASE))
    env.volume.import_token(
        luks.SystemdFido2Token(
            keyslot=slot, credential_id=credential_id, salt=salt, client_pin_required=False
        ).to_json()
    )
    ran = env.ok("luks", "unlock", env.volume.path, "--test-passphrase", "--device", env.spec)  # no stdin at all
    assert b"keyslot 1" in ran.stderr
