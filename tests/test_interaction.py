"""The typed UI seam (libhmacunlock.interaction): each renderer words the same events its own way, none matches text."""

from __future__ import annotations

import io
import socket
import subprocess
import sys

import pytest
from hmacunlock_cli.terminal import TerminalInteraction
from hmacunlock_pam.helper import PIN_PROMPT, PamInteraction
from hmacunlock_pam.protocol import Channel, Frame, Request

from libhmacunlock import interaction as ui
from libhmacunlock.errors import Cancelled, WrongPin
from libhmacunlock.interaction import ClonedKeyWarning, Purpose, ScriptedInteraction, SecretKind, WrongPinRetry


def test_the_events_module_is_cheap_to_import():
    """The PAM helper may use it before its first prompt: no fido2, no cryptography, no dataclasses (inspect)."""
    code = (
        "import sys; before = set(sys.modules); import libhmacunlock.interaction; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "libhmacunlock.interaction" in loaded
    heavy = [m for m in loaded if m.split(".")[0] in {"fido2", "cryptography", "dataclasses", "inspect"}]
    assert heavy == []


def test_every_purpose_and_kind_has_words():
    for purpose in Purpose:
        assert ui.pin_prompt(purpose).endswith(": ") and ui.touch_text(purpose).startswith("Touch")
    for kind in SecretKind:
        assert ui.secret_prompt(kind, "/dev/sdb2").endswith(": ")
    assert ui.secret_prompt(SecretKind.VOLUME_PASSPHRASE, "/dev/sdb2") == "Existing passphrase of /dev/sdb2: "
    assert ui.pin_prompt(Purpose.UNLOCK, "backup-nano", 3) == "PIN of 'backup-nano' (3 attempts left): "
    assert ui.pin_prompt(Purpose.UNLOCK) == "PIN of the security key: "
    assert ui.pin_prompt(Purpose.AUTHORISE, "nano") == "PIN of 'nano': "
    assert ui.pin_prompt(Purpose.ENROLL_FURTHER) == "PIN of the new security key: "
    assert ui.pin_prompt(Purpose.ENROLL_FURTHER, "backup-nano") == "PIN of the new security key 'backup-nano': "
    assert ui.pin_prompt(Purpose.CHANGE_PIN, None, 2) == "Current PIN (2 attempts left): "


def test_info_events_are_values_with_the_errors_wording():
    assert WrongPinRetry(7).text == WrongPin(7).message
    assert WrongPinRetry(None).text == WrongPin(None).message
    warning = ClonedKeyWarning(stored=5, seen=3)
    assert warning == ClonedKeyWarning(5, 3) and "cloned" in warning.text and "Refusing" not in warning.text
    with pytest.raises(AttributeError):
        warning.stored = 9  # type: ignore[misc]


def test_scripted_records_what_it_was_asked():
    s = ScriptedInteraction(["1234"], choice="bob")
    assert s.ask_pin(Purpose.UNLOCK) == "1234"
    s.touch(Purpose.UNLOCK)
    s.info(WrongPinRetry(2))
    assert s.choose_account(["alice", "bob"]) == "bob"
    with pytest.raises(Cancelled, match="Recovery key or passphrase"):
        s.ask_secret(SecretKind.RECOVERY)
    assert s.asked == [Purpose.UNLOCK, SecretKind.RECOVERY]
    assert (s.touched, s.informed, s.choices) == ([Purpose.UNLOCK], [WrongPinRetry(2)], [["alice", "bob"]])


def test_the_terminal_words_each_event_off_a_terminal():
    stderr = io.StringIO()
    term = TerminalInteraction(stdin=io.StringIO("1234\nsecret\n"), stderr=stderr)
    assert term.ask_pin(Purpose.ENROLL_FURTHER) == "1234"
    assert term.ask_secret(SecretKind.NEW_PASSPHRASE) == "secret"
    assert term.confirm_secret(SecretKind.NEW_PASSPHRASE) is None  # not a terminal: no confirmation
    term.touch(Purpose.MAKE_CREDENTIAL)
    term.info(ClonedKeyWarning(5, 3))
    assert term.choose_account(["alice", "bob"]) is None  # nobody to ask
    assert stderr.getvalue().splitlines() == [
        "Touch your security key to create the credential",
        ClonedKeyWarning(5, 3).text,
    ]
    with pytest.raises(Cancelled):
        term.ask_pin(Purpose.UNLOCK)


def _pam(**request: object) -> tuple[PamInteraction, socket.socket]:
    helper_end, module_end = socket.socketpair()
    chan = Channel(helper_end.fileno(), helper_end.fileno())
    interaction = PamInteraction(chan, Request(**{"user": "alice", **request}))  # type: ignore[arg-type]
    interaction._keep = helper_end  # type: ignore[attr-defined]  (the socket lives as long as the interaction)
    module_end.settimeout(5)
    return interaction, module_end


def _frames(module: socket.socket) -> list[tuple[bytes, str]]:
    module.setblocking(False)
    data = b""
    try:
        while chunk := module.recv(4096):
            data += chunk
    except BlockingIOError:
        pass
    frames = []
    while data:
        n = int.from_bytes(data[1:3], "big")
        frames.append((data[:1], data[3 : 3 + n].decode()))
        data = data[3 + n :]
    return frames


@pytest.mark.parametrize("purpose", [Purpose.UNLOCK, Purpose.AUTHORISE, Purpose.SYSTEMD_UNLOCK])
def test_pam_asks_every_pin_with_its_one_prompt(purpose):
    interaction, module = _pam()
    module.sendall(Frame.SECRET.value + b"\x00\x041234")
    assert interaction.ask_pin(purpose, attempts_left=3) == "1234"
    assert _frames(module) == [(b"P", PIN_PROMPT)]


def test_pam_names_a_labelled_key_in_the_pin_prompt():
    interaction, module = _pam()
    module.sendall(Frame.SECRET.value + b"\x00\x041234")
    assert interaction.ask_pin(Purpose.UNLOCK, key_label="backup-nano", attempts_left=3) == "1234"
    assert _frames(module) == [(b"P", "PIN of 'backup-nano': ")]


@pytest.mark.parametrize(
    ("request_fields", "shown"),
    [
        ({}, []),
        ({"cue": True}, [(b"I", "Touch your security key")]),
        ({"cue": True, "cue_prompt": "Tap the key now"}, [(b"I", "Tap the key now")]),
    ],
)
def test_pam_shows_the_touch_cue_only_with_cue(request_fields, shown):
    interaction, module = _pam(**request_fields)
    interaction.touch(Purpose.UNLOCK)
    interaction.info(WrongPinRetry(2))  # info events are always shown
    assert _frames(module) == shown + [(b"I", WrongPin(2).message)]


def test_pam_asks_which_account_with_echo_and_again_after_a_bad_answer():
    interaction, module = _pam(user=None, usernameless=True)
    module.sendall(Frame.SECRET.value + b"\x00\x013" + Frame.SECRET.value + b"\x00\x03bob")
    assert interaction.choose_account(["alice", "bob"]) == "bob"
    listing = "  1) alice\n  2) bob\nWhich account? "  # the list in the prompt itself: PAM_SILENT shows it too
    retry = "  Answer a number from 1 to 2, or one of the names."
    assert _frames(module) == [(b"A", listing), (b"A", f"{retry}\n{listing}")]


def test_pam_gives_up_on_which_account_after_five_bad_answers_and_cancels_without_an_answer():
    interaction, module = _pam(user=None, usernameless=True)
    module.sendall((Frame.SECRET.value + b"\x00\x01x") * 5)
    assert interaction.choose_account(["alice", "bob"]) is None  # then AmbiguousUser: auth_err
    assert [kind for kind, _ in _frames(module)] == [b"A"] * 5
    module.sendall(Frame.CONV_FAILED.value + b"\x00\x00")
    with pytest.raises(Cancelled):
        interaction.choose_account(["alice", "bob"])
