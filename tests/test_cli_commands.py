"""The `hmacunlock` commands of issue 3 as a user runs them: real subprocesses, PINs on stdin (not a terminal),
against a real `hmacunlock softkey serve` process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libhmacunlock.errors import ExitCode

PIN = "135790"


def run(*args: str, stdin: bytes | str = b"", ok: bool = True) -> subprocess.CompletedProcess:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run([sys.executable, "-m", "hmacunlock_cli", *args], input=data, capture_output=True, timeout=60)
    assert "Traceback" not in proc.stderr.decode()
    if ok:
        assert proc.returncode == 0, proc.stderr.decode()
    return proc


@pytest.fixture
def served(udp_softkey_process, tmp_path):
    """(device spec, store dir) with the PIN set on the served key."""
    spec = udp_softkey_process.spec
    run("key", "set-pin", "--device", spec, stdin=PIN + "\n")
    return spec, str(tmp_path / "store")


def test_key_info_json_before_and_after_set_pin(udp_softkey_process):
    spec = udp_softkey_process.spec
    info = json.loads(run("key", "info", "--device", spec, "--json").stdout)
    assert info["features"] == {
        "resident_key": True,
        "client_pin": True,
        "hmac_secret": True,
        "multiple_accounts_per_rp": True,
    }
    assert info["compatible"] is True and info["microsoft_compatible"] is True
    assert info["pin_set"] is False and info["pin_retries"] is None  # the key answers PIN_NOT_SET
    assert "no PIN set" in run("key", "info", "--device", spec).stdout.decode()
    run("key", "set-pin", "--device", spec, stdin=PIN + "\n")
    info = json.loads(run("key", "info", "--device", spec, "--json").stdout)
    assert info["pin_set"] is True and info["pin_retries"] == 8
    again = run("key", "set-pin", "--device", spec, stdin=PIN + "\n", ok=False)
    assert again.returncode == ExitCode.USAGE and b"change-pin" in again.stderr
    run("key", "change-pin", "--device", spec, stdin=f"{PIN}\n24682468\n")
    assert "compatible with hmacunlock: yes" in run("key", "info", "--device", spec).stdout.decode()


def test_enroll_unlock_list_remove(served, tmp_path):
    spec, store = served
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN + "\n")
    run("enroll", "bob", "--device", spec, "--store", store, stdin=PIN + "\n")
    out = run("unlock", "alice", "--device", spec, "--store", store, stdin=PIN + "\n").stdout
    assert out == b"unlocked alice\n"  # no key material unless asked
    uk1 = run("unlock", "alice", "--device", spec, "--store", store, "--key-file", "-", stdin=PIN + "\n").stdout
    uk2 = run("unlock", "alice", "--device", spec, "--store", store, "--key-file", "-", stdin=PIN + "\n").stdout
    bob = run("unlock", "bob", "--device", spec, "--store", store, "--key-file", "-", stdin=PIN + "\n").stdout
    assert len(uk1) == 32 and uk1 == uk2 and bob != uk1 and len(bob) == 32
    key_file = tmp_path / "uk.bin"
    run("unlock", "alice", "--device", spec, "--store", store, "--key-file", str(key_file), stdin=PIN + "\n")
    assert key_file.read_bytes() == uk1 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    listed = json.loads(run("list", "--store", store, "--json").stdout)
    assert [u["user"] for u in listed["users"]] == ["alice", "bob"]
    cred = listed["users"][1]["keys"][0]["credential_id"]
    run("remove", "bob", "--store", store, "--credential", cred, "--yes")
    assert json.loads(run("list", "--store", store, "--json").stdout)["users"][1]["keys"] == []
    run("remove", "bob", "--store", store, "--yes")
    assert "bob" not in run("list", "--store", store).stdout.decode()


def test_usernameless_without_a_terminal(served):
    spec, store = served
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN + "\n")
    assert run("unlock", "--device", spec, "--store", store, stdin=PIN + "\n").stdout == b"unlocked alice\n"
    run("enroll", "bob", "--device", spec, "--store", store, stdin=PIN + "\n")
    both = run("unlock", "--device", spec, "--store", store, stdin=PIN + "\n", ok=False)
    assert both.returncode == ExitCode.CANCELLED and b"alice, bob" in both.stderr


def test_wrong_pins_then_replug(served, udp_softkey_process):
    spec, store = served
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN + "\n")
    wrong = run("unlock", "alice", "--device", spec, "--store", store, stdin="000000\n", ok=False)
    assert wrong.returncode == ExitCode.WRONG_PIN and b"7 attempts left" in wrong.stderr
    run("unlock", "alice", "--device", spec, "--store", store, stdin="000000\n", ok=False)
    third = run("unlock", "alice", "--device", spec, "--store", store, stdin="000000\n", ok=False)
    assert third.returncode == ExitCode.PIN_LOCKED and b"unplug the security key and plug it back in" in third.stderr
    udp_softkey_process.signal(signal.SIGHUP)  # the served key's "unplug and plug back in"
    deadline = time.monotonic() + 10
    while True:
        again = run("unlock", "alice", "--device", spec, "--store", store, stdin=PIN + "\n", ok=False)
        if again.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.returncode == 0, again.stderr


def test_recovery_add_and_unlock_and_a_second_key(served, tmp_path):
    from libhmacunlock.softkey.udp import running_udp_softkey

    spec, store = served
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN + "\n")
    uk = run("unlock", "alice", "--device", spec, "--store", store, "--key-file", "-", stdin=PIN + "\n").stdout
    added = run("recovery", "add", "alice", "--device", spec, "--store", store, stdin=PIN + "\n").stdout
    recovery_key = added.decode().rstrip("\n").splitlines()[-1]
    assert len(recovery_key.split("-")) == 9
    got = run("recovery", "unlock", "alice", "--store", store, "--key-file", "-", stdin=recovery_key + "\n").stdout
    assert got == uk
    bad = run("recovery", "unlock", "alice", "--store", store, stdin="AAAA" * 9 + "\n", ok=False)
    assert bad.returncode == ExitCode.RECOVERY
    # a second key (served from this test process), authorised by the first: existing PIN first, then the new one
    with running_udp_softkey(tmp_path / "second-key.json") as other:
        run("key", "set-pin", "--device", other.spec, stdin="97531864\n")
        run(
            "enroll",
            "alice",
            "--device",
            other.spec,
            "--existing-device",
            spec,
            "--store",
            store,
            stdin=f"{PIN}\n97531864\n",
        )
        second = run(
            "unlock", "alice", "--device", other.spec, "--store", store, "--key-file", "-", stdin="97531864\n"
        ).stdout
    assert second == uk


def test_refusals_leave_the_record_as_it_was(served, udp_softkey_process):
    spec, store = served
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN + "\n")
    path = os.path.join(store, "alice.json")
    data = Path(path).read_bytes()
    os.chmod(path, 0o664)
    unsafe = run("unlock", "alice", "--device", spec, "--store", store, stdin=PIN + "\n", ok=False)
    assert unsafe.returncode == ExitCode.STORE and b"writable by group or others" in unsafe.stderr
    os.chmod(path, 0o600)
    with open(path, "wb") as f:
        f.write(data[:-40])
    broken = run("unlock", "alice", "--device", spec, "--store", store, stdin=PIN + "\n", ok=False)
    assert broken.returncode == ExitCode.STORE and path.encode() in broken.stderr
    assert Path(path).read_bytes() == data[:-40]
    missing = run("unlock", "carol", "--device", spec, "--store", store, stdin=PIN + "\n", ok=False)
    assert missing.returncode == ExitCode.NOT_ENROLLED


def test_key_gone_is_no_key(served, udp_softkey_process):
    spec, store = served
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN + "\n")
    udp_softkey_process.stop()
    gone = run("unlock", "alice", "--device", spec, "--store", store, stdin=PIN + "\n", ok=False)
    assert gone.returncode == ExitCode.NO_KEY
    bad_spec = run("unlock", "alice", "--device", "usb:1", "--store", store, stdin=PIN + "\n", ok=False)
    assert bad_spec.returncode == ExitCode.USAGE


def test_key_file_is_never_overwritten(served, tmp_path):
    spec, store = served
    run("enroll", "alice", "--device", spec, "--store", store, stdin=PIN + "\n")
    existing = tmp_path / "existing"
    existing.write_bytes(b"keep me")
    refused = run(
        "unlock", "alice", "--device", spec, "--store", store, "--key-file", str(existing), stdin=PIN + "\n", ok=False
    )
    assert refused.returncode == ExitCode.USAGE and existing.read_bytes() == b"keep me"


def test_list_on_an_empty_store_says_so(tmp_path):
    store = str(tmp_path / "empty")
    assert "No users enrolled" in run("list", "--store", store).stdout.decode()
    assert json.loads(run("list", "--store", store, "--json").stdout)["users"] == []
