"""`hmacunlock softkey serve` as a real subprocess: ready line, SIGHUP = replug, SIGTERM = clean exit, persistence."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin

from libhmacunlock.errors import ExitCode
from libhmacunlock.udp import open_udp_device
from tests.fixtures.udp import start_softkey_process

PIN = "246810"
RP_ID = "example.com"


def open_key(key):
    return open_udp_device("127.0.0.1", key.port, timeout=5.0)


def read_stderr_line(key, timeout: float = 10.0) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(key.proc.stderr, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError("nothing on stderr")
    return key.proc.stderr.readline()


def pin_token(device, pin: str) -> bytes:
    return ClientPin(Ctap2(device)).get_pin_token(pin, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)


def test_ready_line_names_the_port_and_the_key_answers(udp_softkey_process):
    key = udp_softkey_process
    assert key.ready_line == f"softkey ready on {key.spec} (state {key.state_path})\n"
    assert key.port != 0
    device = open_key(key)
    assert "FIDO_2_1" in Ctap2(device).get_info().versions
    device.close()
    assert oct(key.state_path.stat().st_mode & 0o777) == "0o600"


def test_sighup_lifts_the_three_wrong_pins_lock(udp_softkey_process):
    key = udp_softkey_process
    device = open_key(key)
    ClientPin(Ctap2(device)).set_pin(PIN)
    codes = []
    for _ in range(3):
        with pytest.raises(CtapError) as wrong:
            pin_token(device, "999999")
        codes.append(wrong.value.code)
    assert codes[-1] == CtapError.ERR.PIN_AUTH_BLOCKED
    with pytest.raises(CtapError) as locked:
        pin_token(device, PIN)
    assert locked.value.code == CtapError.ERR.PIN_AUTH_BLOCKED
    device.close()

    key.signal(signal.SIGHUP)
    assert "plugged back in" in read_stderr_line(key)
    device = open_key(key)  # a replugged key is a new device: the old channel is gone
    assert len(pin_token(device, PIN)) == 32
    assert ClientPin(Ctap2(device)).get_pin_retries()[0] == 8
    device.close()
    assert key.proc.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_exit_cleanly(udp_softkey_process, signum):
    key = udp_softkey_process
    key.signal(signum)
    assert key.proc.wait(10) == 0
    assert "Traceback" not in key.proc.stderr.read()


def test_state_survives_a_restart(tmp_path):
    state = tmp_path / "softkey.json"
    first = start_softkey_process(state)
    try:
        device = open_key(first)
        ctap = Ctap2(device)
        client_pin = ClientPin(ctap)
        client_pin.set_pin(PIN)
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
        cdh = os.urandom(32)
        made = ctap.make_credential(
            cdh,
            {"id": RP_ID},
            {"id": b"alice", "name": "alice"},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
            pin_uv_param=client_pin.protocol.authenticate(token, cdh),
            pin_uv_protocol=client_pin.protocol.VERSION,
        )
        with pytest.raises(CtapError):
            pin_token(device, "999999")  # one wrong PIN: 7 left, kept across the restart
        device.close()
    finally:
        assert first.stop() == 0

    second = start_softkey_process(state)
    try:
        device = open_key(second)
        ctap = Ctap2(device)
        assert ClientPin(ctap).get_pin_retries()[0] == 7
        assertion = ctap.get_assertion(RP_ID, os.urandom(32))
        assert assertion.credential["id"] == made.auth_data.credential_data.credential_id
        assert assertion.user["id"] == b"alice"
        assert len(pin_token(device, PIN)) == 32
        device.close()
    finally:
        assert second.stop() == 0


def run_serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hmacunlock_cli", "softkey", "serve", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_corrupt_state_is_reported_and_left_alone(tmp_path):
    state = tmp_path / "softkey.json"
    state.write_text("{ not json")
    ran = run_serve("--state", str(state), "--udp", "127.0.0.1:0")
    assert ran.returncode == ExitCode.STORE
    assert str(state) in ran.stderr and "Traceback" not in ran.stderr and ran.stdout == ""
    assert state.read_text() == "{ not json"


def test_address_in_use_is_a_clear_error(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        ran = run_serve("--state", str(tmp_path / "k.json"), "--udp", f"127.0.0.1:{taken.getsockname()[1]}")
    assert ran.returncode == ExitCode.FAILURE
    assert "cannot listen on udp:127.0.0.1:" in ran.stderr and "Traceback" not in ran.stderr


@pytest.mark.parametrize("bad", ["127.0.0.1", "127.0.0.1:x", ":5", "127.0.0.1:70000"])
def test_bad_listen_address_is_a_usage_error(tmp_path, bad):
    ran = run_serve("--state", str(tmp_path / "k.json"), "--udp", bad)
    assert ran.returncode == ExitCode.USAGE and "HOST:PORT" in ran.stderr


def test_presence_deny_refuses_every_touch(tmp_path):
    key = start_softkey_process(tmp_path / "softkey.json", "--presence", "deny")
    try:
        device = open_key(key)
        with pytest.raises(CtapError) as denied:
            Ctap2(device).selection()
        assert denied.value.code == CtapError.ERR.OPERATION_DENIED
        device.close()
    finally:
        assert key.stop() == 0
