"""libfido2 (C, Debian libfido2-dev: the library behind OpenSSH, systemd and pam-u2f) against the software key.

tests/libfido2/fido2_udp_test.c installs UDP I/O functions (tests/libfido2/udp_io.c) with
fido_dev_set_io_functions, then: set PIN, make a resident ES256 credential with hmac-secret, fido_cred_verify
(packed attestation with x5c), getAssertion with hmac-secret and the PIN, fido_assert_verify.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.system import require_tool

SOURCES = Path(__file__).parent / "libfido2"
PIN = "246810\n"  # on stdin, never argv


@pytest.fixture(scope="module")
def fido2_udp_test(tmp_path_factory) -> Path:
    require_tool("gcc", "pkg-config")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libfido2"], capture_output=True, text=True, timeout=30)
    if flags.returncode != 0 or not Path("/usr/include/fido.h").exists():
        pytest.skip("needs libfido2-dev (Debian package; 'make deps' as root installs it)")
    binary = tmp_path_factory.mktemp("libfido2") / "fido2_udp_test"
    build = subprocess.run(
        [
            "gcc",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(binary),
            str(SOURCES / "fido2_udp_test.c"),
            str(SOURCES / "udp_io.c"),
            *flags.stdout.split(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    return binary


def run(binary: Path, spec: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), spec], input=PIN, capture_output=True, text=True, timeout=120)


def test_libfido2_pin_credential_hmac_secret_and_verify(fido2_udp_test, udp_softkey):
    ran = run(fido2_udp_test, udp_softkey.spec)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    assert "ok: fido_dev_set_pin" in lines
    assert "ok: fido_cred_verify" in lines  # packed attestation with an x5c chain, as pamu2fcfg needs
    assert "ok: fido_assert_verify" in lines
    assert "ok: hmac-secret output length 32" in lines
    assert any("fmt packed" in line for line in lines)
    # the PIN really was set, through CTAP: the key now says so to python-fido2 too
    from fido2.ctap2 import Ctap2

    from libhmacunlock.udp import open_udp_device

    device = open_udp_device("127.0.0.1", udp_softkey.port)
    assert Ctap2(device).get_info().options["clientPin"] is True
    device.close()


def test_libfido2_against_the_serve_command(fido2_udp_test, udp_softkey_process):
    ran = run(fido2_udp_test, udp_softkey_process.spec)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_libfido2_reports_a_missing_key(fido2_udp_test):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ran = run(fido2_udp_test, f"udp:127.0.0.1:{port}")
    assert ran.returncode != 0 and "FAIL: fido_dev_open" in ran.stderr
