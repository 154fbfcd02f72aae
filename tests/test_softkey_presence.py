"""PresencePolicy: approve, deny, and a prompt on a terminal (a real pty here) with timeout, keepalive, cancel."""

from __future__ import annotations

import os
import pty
import threading

import pytest
from fido2.ctap import STATUS, CtapError

from libhmacunlock.softkey.errors import CtapFailure
from libhmacunlock.softkey.presence import PresencePolicy


@pytest.fixture
def terminal():
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    yield master, name
    os.close(master)
    os.close(slave)


def _read_until(fd: int, wanted: bytes, timeout: float = 5.0) -> bytes:
    """The pty moves bytes asynchronously (the kernel's flip buffers): read until `wanted` has arrived."""
    import select

    seen = b""
    while wanted not in seen and select.select([fd], [], [], timeout)[0]:
        seen += os.read(fd, 1024)
    return seen


def _fails(policy: PresencePolicy, **kwargs) -> CtapError.ERR:
    with pytest.raises(CtapFailure) as exc:
        policy.wait("test", **kwargs)
    return exc.value.code


def test_approve_and_deny():
    PresencePolicy.approve().wait("test")
    assert _fails(PresencePolicy.deny()) == CtapError.ERR.OPERATION_DENIED


def test_prompt_enter_approves_n_denies(terminal):
    master, name = terminal
    os.write(master, b"\n")
    statuses = []
    PresencePolicy.prompt(timeout=5, tty=name).wait("test", keepalive=statuses.append)
    assert statuses and set(statuses) == {STATUS.UPNEEDED}
    assert b"touch requested" in _read_until(master, b"touch requested")
    os.write(master, b"n\n")
    assert _fails(PresencePolicy.prompt(timeout=5, tty=name)) == CtapError.ERR.OPERATION_DENIED


def test_prompt_times_out(terminal):
    _, name = terminal
    statuses = []
    assert _fails(PresencePolicy.prompt(timeout=0.3, tty=name), keepalive=statuses.append) == (
        CtapError.ERR.USER_ACTION_TIMEOUT
    )
    assert len(statuses) >= 2  # keepalives kept coming while waiting


def test_prompt_is_cancelled(terminal):
    _, name = terminal
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    assert _fails(PresencePolicy.prompt(timeout=10, tty=name), cancel=cancel) == CtapError.ERR.KEEPALIVE_CANCEL


def test_no_terminal_fails_closed(tmp_path):
    assert _fails(PresencePolicy.prompt(timeout=1, tty=str(tmp_path / "none"))) == CtapError.ERR.OPERATION_DENIED


def test_delayed_approve_sends_keepalives_and_honours_cancel():
    statuses = []
    PresencePolicy.approve(delay=0.25).wait("test", keepalive=statuses.append)
    assert statuses and set(statuses) == {STATUS.UPNEEDED}
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    assert _fails(PresencePolicy.approve(delay=10), cancel=cancel) == CtapError.ERR.KEEPALIVE_CANCEL


def test_cancel_reaches_the_authenticator(softkey_device):
    from fido2.ctap2 import Ctap2

    softkey_device.authenticator.presence = PresencePolicy.approve(delay=10)
    ctap = Ctap2(softkey_device)
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    seen = []
    with pytest.raises(CtapError) as exc:
        ctap.selection(event=cancel, on_keepalive=seen.append)
    assert exc.value.code == CtapError.ERR.KEEPALIVE_CANCEL
    assert seen == [STATUS.UPNEEDED]  # once per run of the same status


def test_power_cycle_ends_a_wait_for_a_touch(softkey_auth):
    """Unplugging the key while it waits for a touch ends the request instead of waiting for it to time out."""
    softkey_auth.presence = PresencePolicy.approve(delay=30)
    answers = []
    waiting = threading.Event()
    worker = threading.Thread(
        target=lambda: answers.append(softkey_auth.process(b"\x0b", keepalive=lambda status: waiting.set()))
    )
    worker.start()
    assert waiting.wait(5)
    softkey_auth.power_cycle()
    worker.join(timeout=5)
    assert answers == [bytes([CtapError.ERR.KEEPALIVE_CANCEL])]
    assert softkey_auth.process(b"\x04")[0] == 0
