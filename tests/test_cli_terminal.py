"""On a terminal: the PIN is read without echo and usernameless unlock asks which account (a real pty)."""

from __future__ import annotations

import os
import pty
import re
import select
import sys
import termios
import time

from tests.fixtures.library import enroll_user
from tests.fixtures.softkey import TEST_PIN

TIMEOUT = 30.0


class Terminal:
    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(sys.executable, [sys.executable, "-m", "hmacunlock_cli", *argv])
        self.output = b""

    def expect(self, pattern: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not re.search(pattern, self.output):
            assert time.monotonic() < deadline, f"no {pattern!r} in {self.output!r}"
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.output += os.read(self.fd, 1024)
                except OSError:
                    break
        assert re.search(pattern, self.output), self.output

    def wait_echo_off(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while termios.tcgetattr(self.fd)[3] & termios.ECHO:
            assert time.monotonic() < deadline, "echo never turned off"
            time.sleep(0.02)

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def finish(self) -> int:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.fd, 1024)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                self.output += chunk
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_usernameless_with_two_accounts_asks_on_the_terminal(store, udp_softkey):
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    from libhmacunlock.discovery import open_key

    with open_key(udp_softkey.spec) as k:
        ClientPin(Ctap2(k.device)).set_pin(TEST_PIN)
    enroll_user(store, udp_softkey.spec, "alice")
    enroll_user(store, udp_softkey.spec, "bob")
    term = Terminal(["unlock", "--device", udp_softkey.spec, "--store", str(store.path)])
    term.expect(rb"PIN.*: ")
    term.wait_echo_off()
    term.send(TEST_PIN)
    term.expect(rb"alice[\s\S]*bob[\s\S]*Which account\? ")
    term.send("bob")
    assert term.finish() == 0
    assert b"unlocked bob" in term.output and TEST_PIN.encode() not in term.output  # no echo of the PIN


def test_set_pin_on_a_terminal_asks_twice_and_refuses_a_mismatch(udp_softkey):
    term = Terminal(["key", "set-pin", "--device", udp_softkey.spec])
    term.expect(rb"New PIN: ")
    term.wait_echo_off()
    term.send("11112222")
    term.expect(rb"Repeat the new PIN: ")
    term.wait_echo_off()
    term.send("11113333")
    assert term.finish() == 2 and b"differ" in term.output
    term = Terminal(["key", "set-pin", "--device", udp_softkey.spec])
    for prompt in (rb"New PIN: ", rb"Repeat the new PIN: "):
        term.expect(prompt)
        term.wait_echo_off()
        term.send("11112222")
    assert term.finish() == 0 and b"PIN set" in term.output and b"11112222" not in term.output


def test_raw_unlock_key_is_not_printed_on_a_terminal(store, udp_softkey):
    term = Terminal(["unlock", "alice", "--device", udp_softkey.spec, "--store", str(store.path), "--key-file", "-"])
    assert term.finish() == 2 and b"Refusing to print the raw unlock key on a terminal" in term.output
    assert b"PIN" not in term.output  # refused before anything was asked
