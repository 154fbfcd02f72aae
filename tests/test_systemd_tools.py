"""systemd's own tools and hmacunlock open each other's volumes, on the software key (root; CI runs them).

systemd-cryptenroll (systemd 252, Debian 12) and cryptsetup's systemd-fido2 token plugin reach the software key over
UDP through a libfido2 wrapper library built here (tests/fixtures/systemd.py). Each runs on a pseudo-terminal, the
PIN typed when it asks: never in argv or the environment.

(a) a volume enrolled by `systemd-cryptenroll --fido2-device=auto` opens with `hmacunlock luks unlock`, with
    `--fido2-with-client-pin=yes` and `=no`, on a key without makeCredUvNotRqd (systemd asks the PIN) and on keys
    with it, where systemd 252-255 never asks the PIN yet writes `fido2-clientPin-required: true` (systemd #31443).
(b) a volume enrolled with `hmacunlock luks enroll --systemd` opens with
    `cryptsetup open --test-passphrase --token-only` through systemd's plugin, which asks the PIN itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ptyrun import run_on_pty
from libhmacunlock.errors import ExitCode
from libhmacunlock.targets import luks
from tests.fixtures.luks import FIRST_PASSPHRASE, make_volume
from tests.fixtures.softkey import TEST_PIN, make_profiled_softkey
from tests.fixtures.systemd import build_libfido2_wrapper, require_systemd_tools, tool_env

pytestmark = pytest.mark.root

WRONG_PIN = "135790"
NOTE_31443 = b"#31443"
# systemd: "Please enter security token PIN: (press TAB for no echo)"; cryptsetup: "Enter token PIN:"
PIN_PROMPT = rb"(?i)pin:[^\n]*$"


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory) -> Path:
    require_systemd_tools()
    return build_libfido2_wrapper(tmp_path_factory.mktemp("libfido2-wrapper"))


class Setup:
    def __init__(self, tmp: Path, spec: str, port: int, wrapper: Path) -> None:
        self.tmp, self.spec, self.port, self.wrapper = tmp, spec, port, wrapper
        self.volume = make_volume(tmp / "vol.luks")

    @property
    def env(self) -> dict[str, str]:
        return tool_env(self.wrapper, self.port)

    def cryptenroll(self, with_pin: bool, *extra: str) -> tuple[bool, str]:
        """systemd-cryptenroll on a pty; (whether it asked the PIN, what it printed)."""
        key_file = self.tmp / "existing.key"
        key_file.write_bytes(FIRST_PASSPHRASE)
        os.chmod(key_file, 0o600)
        run = run_on_pty(
            [
                "systemd-cryptenroll",
                "--fido2-device=auto",
                f"--fido2-with-client-pin={'yes' if with_pin else 'no'}",
                f"--unlock-key-file={key_file}",
                *extra,
                self.volume.path,
            ],
            [TEST_PIN],
            prompt=PIN_PROMPT,
            env=self.env,
            timeout=120,
        )
        assert run.returncode == 0, run.text()
        return bool(run.answered), run.text()

    def hmacunlock(self, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hmacunlock_cli", *argv, "--device", self.spec],
            input=stdin,
            capture_output=True,
            timeout=180,
        )


def _setup(tmp_path: Path, wrapper: Path, profile: str) -> Iterator[Setup]:
    from libhmacunlock.softkey.udp import running_udp_softkey

    state = tmp_path / "softkey.json"
    make_profiled_softkey(state, profile)
    with running_udp_softkey(state, profile=profile) as server:
        yield Setup(tmp_path, server.spec, server.port, wrapper)


# --- (a) systemd-cryptenroll's volume, opened by hmacunlock ----------------------------------------------------


@pytest.mark.parametrize(
    "profile, with_pin, systemd_asks",
    [
        ("yubikey-5.2", True, True),  # no makeCredUvNotRqd: PIN_REQUIRED, systemd asks and uses it
        ("yubikey-5.2", False, True),  # systemd asks for makeCredential, but computes the secret without it
        ("ctap21", False, False),
        ("yubikey-5.7", False, False),
    ],
)
def test_systemd_cryptenroll_volume_opens_with_hmacunlock(tmp_path, wrapper, profile, with_pin, systemd_asks):
    for setup in _setup(tmp_path, wrapper, profile):
        asked, shown = setup.cryptenroll(with_pin)
        # systemd may take the PIN from the kernel keyring's cache ("fido2-pin") instead of asking again: only a
        # key that never needs the PIN is sure not to be asked
        if not systemd_asks:
            assert not asked, shown
        (token,) = setup.volume.systemd_tokens()
        assert token.client_pin_required is with_pin
        stdin = (TEST_PIN + "\n").encode() if with_pin else b""
        ran = setup.hmacunlock("luks", "unlock", setup.volume.path, "--test-passphrase", stdin=stdin)
        assert ran.returncode == 0, ran.stderr.decode()
        assert f"keyslot {token.keyslot}".encode() in ran.stdout + ran.stderr
        assert NOTE_31443 not in ran.stderr  # a volume enrolled as its token says opens as it says
        if with_pin:
            wrong = setup.hmacunlock(
                "luks", "unlock", setup.volume.path, "--test-passphrase", stdin=(WRONG_PIN + "\n").encode()
            )
            assert wrong.returncode == ExitCode.WRONG_PIN


@pytest.mark.parametrize("profile", ["ctap21", "yubikey-5.7"])
def test_systemd_31443_volume_opens_with_the_pin_and_says_why(tmp_path, wrapper, profile):
    """makeCredUvNotRqd: systemd 252-255 never asks the PIN, writes clientPin-required, and locks the volume with the
    key's no-PIN secret. hmacunlock asks the PIN as the token says, finds the PIN's secret does not open the
    keyslot, and then (and only then) opens it with the no-PIN secret, saying so."""
    for setup in _setup(tmp_path, wrapper, profile):
        asked, _ = setup.cryptenroll(with_pin=True)
        if asked:
            pytest.skip("this systemd asks the PIN on a makeCredUvNotRqd key (systemd #31443 fixed)")
        (token,) = setup.volume.systemd_tokens()
        assert token.client_pin_required is True  # what systemd wrote, though it never asked
        ran = setup.hmacunlock(
            "luks", "unlock", setup.volume.path, "--test-passphrase", stdin=(TEST_PIN + "\n").encode()
        )
        assert ran.returncode == 0, ran.stderr.decode()
        assert NOTE_31443 in ran.stderr
        # the PIN is still required by hmacunlock, as the token says: a wrong one opens nothing
        wrong = setup.hmacunlock(
            "luks", "unlock", setup.volume.path, "--test-passphrase", stdin=(WRONG_PIN + "\n").encode()
        )
        assert wrong.returncode == ExitCode.WRONG_PIN
        assert setup.volume.systemd_tokens() == [token]  # nothing about the volume was changed


def test_systemd_user_verification_volume_opens_with_the_finger(tmp_path, wrapper):
    """`--fido2-with-user-verification=yes` on a bio key: systemd has the key verify the user itself; hmacunlock
    opens it with the finger (no PIN line read), the PIN being its fallback: either sets UV, the secret systemd used."""
    for setup in _setup(tmp_path, wrapper, "bio"):
        setup.cryptenroll(False, "--fido2-with-user-verification=yes")
        (token,) = setup.volume.systemd_tokens()
        assert token.uv_required and not token.client_pin_required
        ran = setup.hmacunlock("luks", "unlock", setup.volume.path, "--test-passphrase")
        assert ran.returncode == 0, ran.stderr.decode()
        assert f"keyslot {token.keyslot}".encode() in ran.stdout + ran.stderr


# --- (b) hmacunlock's --systemd volume, opened by systemd's token plugin -------------------------------------


@pytest.mark.parametrize("profile", ["ctap21", "yubikey-5.2", "yubikey-5.7", "solo1"])
def test_hmacunlock_systemd_volume_opens_with_systemds_token_plugin(tmp_path, wrapper, profile):
    for setup in _setup(tmp_path, wrapper, profile):
        ran = setup.hmacunlock(
            "luks",
            "enroll",
            setup.volume.path,
            "--systemd",
            stdin=(TEST_PIN + "\n").encode() + FIRST_PASSPHRASE + b"\n",
        )
        assert ran.returncode == 0, ran.stderr.decode()
        (token,) = setup.volume.systemd_tokens()
        run = run_on_pty(
            ["cryptsetup", "open", "--test-passphrase", "--token-only", setup.volume.path],
            [TEST_PIN],
            prompt=PIN_PROMPT,
            env=setup.env,
            timeout=120,
        )
        assert run.returncode == 0, run.text()
        assert run.answered, "systemd's plugin asks the PIN itself"
        wrong = run_on_pty(
            ["cryptsetup", "open", "--test-passphrase", "--token-only", "--tries", "1", setup.volume.path],
            [WRONG_PIN],
            prompt=PIN_PROMPT,
            env=setup.env,
            timeout=120,
        )
        assert wrong.returncode != 0
        assert isinstance(token, luks.SystemdFido2Token) and token.client_pin_required
