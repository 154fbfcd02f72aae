"""On a terminal: the PIN is read without echo and usernameless unlock asks which account (a real pty)."""

from __future__ import annotations

from tests.fixtures.library import enroll_user
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.terminal import Terminal


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
