"""The helper's side of the protocol (hmacunlock_pam.protocol, .verdicts, .helper), without PAM and without root."""

from __future__ import annotations

import inspect
import signal
import socket

import pytest
from hmacunlock_pam.protocol import MAX_PAYLOAD, Channel, Frame, ProtocolError, Request, Verdict
from hmacunlock_pam.verdicts import verdict_for
from hypothesis import given, settings
from hypothesis import strategies as st

from libhmacunlock import errors
from tests.fixtures.helper_process import HelperProcess

# --- the request ----------------------------------------------------------------------------------------------


def test_a_full_request_parses():
    r = Request.parse(
        b"user=alice\nstore=/var/lib/hmu\ndevice=udp:127.0.0.1:1\nrp_id=hmacunlock\nmax_tries=2\n"
        b"cue=1\ncue_prompt=Touch it now\nnouserok=1\ndebug=1\nprofile=/home/alice\n"
        b"pin_floor=4\nruid=1000\nsilent=1\ntouch_first=1\n"
    )
    assert r == Request(
        user="alice",
        store="/var/lib/hmu",
        device="udp:127.0.0.1:1",
        rp_id="hmacunlock",
        max_tries=2,
        cue=True,
        cue_prompt="Touch it now",
        nouserok=True,
        debug=True,
        profile="/home/alice",
        pin_floor=4,
        ruid=1000,
        silent=True,
        touch_first=True,
    )


def test_defaults():
    r = Request.parse(b"user=bob\n")
    assert (r.max_tries, r.nouserok, r.cue, r.store, r.device) == (2, False, False, None, None)
    assert (r.pin_floor, r.ruid, r.silent, r.touch_first) == (3, None, False, False)


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no user
        b"user=alice",  # no final newline
        b"store=/x\n",  # no user
        b"user=alice\nuser=bob\n",  # duplicate
        b"user=alice\nfrobnicate=1\n",  # unknown key
        b"user=alice\nstore=\n",  # empty value
        b"user=alice\nnouserok=yes\n",  # flags are 1
        b"user=alice\nmax_tries=0\n",
        b"user=alice\nmax_tries=11\n",
        b"user=alice\nmax_tries=-1\n",
        b"user=../root\n",
        b"user=alice\n\n",  # empty line
        b"user=al\xffice\n",  # not UTF-8
        b"user=alice\rroot\n",  # a control character (log forging)
        b"user=alice\x1b[2J\n",
        b"user=alice\x7f\n",
        b"user=alice\nstore=relative/store\n",  # paths are absolute
        b"user=alice\nprofile=home/alice\n",
        b"user=alice\npin_floor=9\n",
        b"user=alice\nruid=root\n",
    ],
)
def test_a_malformed_request_is_refused(payload):
    with pytest.raises(ProtocolError):
        Request.parse(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_request_bytes_parse_or_raise_protocol_error(payload):
    try:
        r = Request.parse(payload)
    except ProtocolError:
        return
    assert r.user and "/" not in r.user


# --- framing --------------------------------------------------------------------------------------------------


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield Channel(b.fileno(), b.fileno()), a
    a.close()
    b.close()


def test_frames_round_trip(pair):
    chan, module = pair
    module.sendall(b"S\x00\x04" + b"1234")
    assert chan.read_secret() == "1234"
    chan.send(Frame.PROMPT_SECRET, "PIN: ")
    assert module.recv(100) == b"P\x00\x05PIN: "


def test_conv_failed_is_no_secret(pair):
    chan, module = pair
    module.sendall(b"C\x00\x00")
    assert chan.read_secret() is None


@pytest.mark.parametrize(
    "raw",
    [
        b"V\x00\x07success",  # a helper-side frame coming from the module
        b"X\x00\x00",  # unknown type
        b"S" + (MAX_PAYLOAD + 1).to_bytes(2, "big"),  # too long
        b"S\x00\x0312\x00",  # NUL inside
        b"S\x00\x10short",  # ends inside the frame
        b"Q\x00\x00",  # a request where a secret is due
    ],
)
def test_bad_frames_are_protocol_errors(pair, raw):
    chan, module = pair
    module.sendall(raw)
    module.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError):
        chan.read_secret()


def test_an_overlong_message_is_cut_to_the_limit(pair):
    chan, module = pair
    chan.send(Frame.INFO, "é" * MAX_PAYLOAD)
    header = module.recv(3)
    assert header[:1] == b"I" and int.from_bytes(header[1:], "big") <= MAX_PAYLOAD


# --- verdicts -------------------------------------------------------------------------------------------------


def _error_instances():
    """One instance of every error type the library defines."""
    args = {
        "attempts_left": 3,
        "feature": "hmac-secret",
        "user": "alice",
        "users": ["a", "b"],
        "hidden": [("alice", "AAAA")],
        "stored": 5,
        "seen": 4,
        "path": "/var/lib/hmu/alice",
        "reason": "why",
        "message": "msg",
        "detail": "",
    }
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.HmacUnlockError):
            params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
            yield cls(**{p: args.get(p, "x") for p in params})


def test_only_a_missing_record_with_nouserok_is_ignorable():
    for exc in _error_instances():
        for nouserok in (False, True):
            verdict, _ = verdict_for(exc, nouserok=nouserok)
            assert verdict is not Verdict.SUCCESS
            expect_ignore = nouserok and isinstance(exc, errors.NoRecord)
            assert (verdict is Verdict.USER_UNKNOWN) == expect_ignore, type(exc).__name__


@pytest.mark.parametrize(
    "exc, verdict",
    [
        (errors.WrongPin(2), Verdict.AUTH_ERR),
        (errors.PinBlocked(), Verdict.AUTH_ERR),
        (errors.CredentialNotOnKey("alice"), Verdict.AUTH_ERR),
        (errors.ClonedKey(5, 4), Verdict.AUTH_ERR),
        (errors.NoKeyFound("No security key found."), Verdict.AUTHINFO_UNAVAIL),
        (errors.NotEnrolled("alice"), Verdict.AUTHINFO_UNAVAIL),
        # CVE-2020-24612 class: an enrolled user's broken or unsafe record is a failure, not "not enrolled"
        (errors.RecordTampered("/s/alice", "bad tag"), Verdict.AUTH_ERR),
        (errors.UnsafeLocation("/s/alice", "symlink"), Verdict.AUTH_ERR),
        (errors.RecordUnreadable("/s/alice", "bad JSON"), Verdict.AUTH_ERR),
        (RuntimeError("secret 123456 in a message"), Verdict.SYSTEM_ERR),
    ],
)
def test_verdict_table(exc, verdict):
    got, shown = verdict_for(exc, nouserok=False)  # nouserok: test_only_not_enrolled_with_nouserok_is_ignorable
    assert got is verdict
    assert "123456" not in (shown or "")  # an unexpected exception's text is never shown


def test_wrong_pin_message_says_attempts_left():
    _, shown = verdict_for(errors.WrongPin(2), nouserok=False)
    assert "2 attempts left" in shown


# --- the real helper process ----------------------------------------------------------------------------------


@pytest.fixture
def helper():
    h = HelperProcess()
    yield h
    if h.proc.poll() is None:
        h.proc.kill()
    h.close()


@pytest.fixture
def enrolled_store(tmp_path, udp_softkey):
    """A store where hmu-test-alice is enrolled on the software key served over UDP."""
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    from libhmacunlock.enroll import enroll
    from libhmacunlock.interaction import ScriptedInteraction
    from libhmacunlock.softkey.device import SoftKeyDevice
    from tests.fixtures.softkey import TEST_PIN

    ClientPin(Ctap2(SoftKeyDevice(udp_softkey.authenticator))).set_pin(TEST_PIN)
    store = tmp_path / "store"
    enroll(str(store), udp_softkey.spec, ScriptedInteraction([TEST_PIN]), "hmu-test-alice")
    return f"user=hmu-test-alice\nstore={store}\ndevice={udp_softkey.spec}\n".encode()


def test_the_first_frame_comes_at_once_and_a_failed_conversation_is_auth_err(helper, enrolled_store):
    helper.send(b"Q", enrolled_store)
    assert helper.recv() == (b"L", "started")  # before anything slow: the module knows the helper is there
    kind, text = helper.recv()
    assert (kind, text) == (b"P", "Security key PIN: ")  # after the probe found the key holding the credential
    with open(f"/proc/{helper.proc.pid}/limits") as f:
        core = next(line for line in f if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]  # no core dump can hold the PIN
    helper.send(b"C")
    frames = [helper.recv(), helper.recv()]
    assert frames[-1][0] == b"V" and frames[-1][1].split("\n")[0] == "auth_err"
    assert helper.close() == 0


def test_a_user_not_enrolled_is_never_asked_for_a_pin(helper, tmp_path):
    helper.send(b"Q", f"user=hmu-test-nobody\nstore={tmp_path}\ndevice=udp:127.0.0.1:9\n".encode())
    frames = [helper.recv(), helper.recv(), helper.recv()]
    assert [k for k, _ in frames] == [b"L", b"E", b"V"]
    assert "not enrolled" in frames[1][1] and frames[2][1].split("\n")[0] == "authinfo_unavail"
    assert helper.close() == 0


@pytest.mark.parametrize("request_bytes", [b"user=a\nbogus=1\n", b"garbage"])
def test_a_bad_request_gets_no_verdict_and_a_failing_exit(helper, request_bytes):
    helper.send(b"Q", request_bytes)
    helper.module.shutdown(socket.SHUT_WR)
    assert helper.module.recv(10) == b""
    assert helper.proc.wait(timeout=60) != 0


def test_the_module_going_away_ends_the_helper(helper, enrolled_store):
    helper.send(b"Q", enrolled_store)
    assert helper.recv()[0] == b"L"
    assert helper.recv()[0] == b"P"
    helper.module.close()
    assert helper.proc.wait(timeout=60) not in (0, -signal.SIGKILL)  # it noticed and ended by itself
