"""The key's CTAPHID state machine, driven report by report without sockets (CTAP 2.1 §11.2).

The authenticator behind it is the real one (in-process, approve presence; a delayed touch where a request must
wait). Time for message timeouts and keepalive pacing is a fake clock, so nothing here depends on the machine's speed.
"""

from __future__ import annotations

import os
import struct

import pytest
from fido2 import cbor

from libhmacunlock.softkey.ctaphid import (
    BROADCAST_CID,
    CAPABILITIES,
    MAX_MESSAGE,
    REPORT_SIZE,
    Capability,
    Cmd,
    HidError,
    frame,
)
from tests.fixtures.udp import FakeClock, Host, make_authenticator

GET_INFO = b"\x04"
SELECTION = b"\x0b"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def host(tmp_path, clock) -> Host:
    h = Host(make_authenticator(tmp_path / "key.json"), clock)
    yield h
    h.key.close()


@pytest.fixture
def slow_host(tmp_path, clock) -> Host:
    # a touch that only comes after 20 s: long enough to cancel, short enough that a failing test still ends
    h = Host(make_authenticator(tmp_path / "key.json", delay=20.0), clock)
    yield h
    h.key.close()


def test_init_allocates_distinct_channels_and_echoes_the_nonce(host):
    nonce = os.urandom(8)
    host.send(BROADCAST_CID, Cmd.INIT, nonce)
    cmd, body = host.response(BROADCAST_CID)
    assert cmd == Cmd.INIT and len(body) == 17 and body[:8] == nonce
    cid, version, _, _, _, caps = struct.unpack(">IBBBBB", body[8:])
    assert cid not in (0, BROADCAST_CID) and version == 2
    assert caps == CAPABILITIES and caps & Capability.CBOR and caps & Capability.NMSG
    assert host.init() != cid


def test_ping_echoes_a_fragmented_message(host):
    cid = host.init()
    payload = os.urandom(1000)  # one INIT packet and 17 CONT packets each way
    assert host.call(cid, Cmd.PING, payload) == (Cmd.PING, payload)
    assert host.call(cid, Cmd.PING, b"") == (Cmd.PING, b"")


def test_largest_message_round_trips_and_one_more_byte_is_refused(host):
    cid = host.init()
    payload = os.urandom(MAX_MESSAGE)
    assert host.call(cid, Cmd.PING, payload) == (Cmd.PING, payload)
    host.send_raw(struct.pack(">IBH", cid, 0x80 | Cmd.PING, MAX_MESSAGE + 1))
    assert host.response(cid) == (Cmd.ERROR, bytes([HidError.INVALID_LEN]))


def test_cbor_reaches_the_authenticator(host):
    cid = host.init()
    cmd, body = host.call(cid, Cmd.CBOR, GET_INFO)
    assert cmd == Cmd.CBOR and body[0] == 0
    assert "FIDO_2_1" in cbor.decode(body[1:])[1]


def test_wink_answers_empty(host):
    cid = host.init()
    assert host.call(cid, Cmd.WINK, b"") == (Cmd.WINK, b"")


@pytest.mark.parametrize("cmd", [Cmd.MSG, Cmd.LOCK, 0x55, 0x40])
def test_u2f_and_unknown_commands_are_invalid(host, cmd):
    cid = host.init()
    assert host.call(cid, cmd, b"\x00\x01\x00\x00") == (Cmd.ERROR, bytes([HidError.INVALID_CMD]))


def test_channel_errors(host):
    cid = host.init()
    assert host.call(0, Cmd.PING, b"x") == (Cmd.ERROR, bytes([HidError.INVALID_CHANNEL]))
    assert host.call(cid + 1, Cmd.PING, b"x") == (Cmd.ERROR, bytes([HidError.INVALID_CHANNEL]))
    assert host.call(BROADCAST_CID, Cmd.PING, b"x") == (Cmd.ERROR, bytes([HidError.INVALID_CHANNEL]))


def test_length_errors(host):
    cid = host.init()
    assert host.call(BROADCAST_CID, Cmd.INIT, b"1234567") == (Cmd.ERROR, bytes([HidError.INVALID_LEN]))
    assert host.call(cid, Cmd.CBOR, b"") == (Cmd.ERROR, bytes([HidError.INVALID_LEN]))


def test_wrong_sequence_aborts_the_message_and_the_channel_recovers(host):
    cid = host.init()
    reports = frame(cid, Cmd.PING, os.urandom(200))  # INIT + 3 CONT
    host.send_raw(reports[0])
    host.send_raw(reports[2])  # seq 1 where 0 was due
    assert host.response(cid) == (Cmd.ERROR, bytes([HidError.INVALID_SEQ]))
    host.send_raw(reports[1])  # the rest of the broken message is ignored
    assert host.call(cid, Cmd.PING, b"again") == (Cmd.PING, b"again")


def test_a_new_message_before_the_last_is_complete_is_a_sequence_error(host):
    cid = host.init()
    host.send_raw(frame(cid, Cmd.PING, os.urandom(200))[0])
    host.send_raw(frame(cid, Cmd.PING, b"x")[0])
    assert host.response(cid) == (Cmd.ERROR, bytes([HidError.INVALID_SEQ]))


def test_message_timeout_between_packets(host, clock):
    cid = host.init()
    reports = frame(cid, Cmd.PING, os.urandom(200))
    host.send_raw(reports[0])
    clock.advance(0.4)
    host.key.tick()
    assert host.pending() == []  # still within 500 ms
    host.send_raw(reports[1])
    clock.advance(0.6)
    host.key.tick()
    assert host.response(cid) == (Cmd.ERROR, bytes([HidError.MSG_TIMEOUT]))
    assert host.call(cid, Cmd.PING, b"ok") == (Cmd.PING, b"ok")


def test_other_channels_are_busy_while_a_message_is_in_progress(host):
    a, b = host.init(), host.init()
    reports = frame(a, Cmd.PING, os.urandom(100))
    host.send_raw(reports[0])
    assert host.call(b, Cmd.PING, b"x") == (Cmd.ERROR, bytes([HidError.CHANNEL_BUSY]))
    host.send_raw(frame(b, Cmd.PING, os.urandom(100))[1])  # b's stray CONT packet: ignored
    host.send_raw(reports[1])
    cmd, body = host.response(a)
    assert cmd == Cmd.PING and len(body) == 100
    assert host.call(b, Cmd.PING, b"x") == (Cmd.PING, b"x")


def test_keepalive_while_waiting_for_a_touch_then_cancel(slow_host, clock):
    cid = slow_host.init()
    other = slow_host.init()
    slow_host.send(cid, Cmd.CBOR, SELECTION)
    slow_host.wait_keepalive(cid, status=2)  # STATUS.UPNEEDED, sent as fake time passes
    # while it waits, every other channel is busy and the waiting channel refuses a second request
    assert slow_host.call(other, Cmd.PING, b"x") == (Cmd.ERROR, bytes([HidError.CHANNEL_BUSY]))
    slow_host.send(cid, Cmd.PING, b"x")
    assert slow_host.response(cid, skip_keepalive=True) == (Cmd.ERROR, bytes([HidError.CHANNEL_BUSY]))
    slow_host.send(cid, Cmd.CANCEL, b"")
    assert slow_host.response(cid, skip_keepalive=True, timeout=10) == (Cmd.CBOR, b"\x2d")  # KEEPALIVE_CANCEL
    assert slow_host.call(other, Cmd.PING, b"x") == (Cmd.PING, b"x")


def test_cancel_on_another_channel_does_not_cancel(slow_host, clock):
    cid, other = slow_host.init(), slow_host.init()
    slow_host.send(cid, Cmd.CBOR, SELECTION)
    slow_host.wait_keepalive(cid)
    slow_host.send(other, Cmd.CANCEL, b"")
    slow_host.wait_keepalive(cid)  # still waiting
    slow_host.send(cid, Cmd.CANCEL, b"")
    assert slow_host.response(cid, skip_keepalive=True, timeout=10) == (Cmd.CBOR, b"\x2d")


def test_init_on_a_waiting_channel_resyncs_it(slow_host, clock):
    cid = slow_host.init()
    slow_host.send(cid, Cmd.CBOR, SELECTION)
    slow_host.wait_keepalive(cid)
    nonce = os.urandom(8)
    slow_host.send(cid, Cmd.INIT, nonce)
    cmd, body = slow_host.response(cid, skip_keepalive=True)
    assert cmd == Cmd.INIT and body[:8] == nonce and struct.unpack_from(">I", body, 8)[0] == cid
    # the abandoned request's answer is never delivered; the channel works once it has ended
    assert slow_host.call_retrying_busy(cid, Cmd.PING, b"after") == (Cmd.PING, b"after")
    assert all(cmd != Cmd.CBOR for cmd, _ in slow_host.drain(cid))


def test_power_cycle_forgets_channels(host):
    cid = host.init()
    host.key.power_cycle()
    assert host.call(cid, Cmd.PING, b"x") == (Cmd.ERROR, bytes([HidError.INVALID_CHANNEL]))
    cid = host.init()
    assert host.call(cid, Cmd.PING, b"x") == (Cmd.PING, b"x")


def test_replies_go_to_the_sender(host):
    cid = host.init()
    host.key.receive(frame(cid, Cmd.PING, b"x")[0], "peer-b")
    assert host.sent[-1] == (frame(cid, Cmd.PING, b"x")[0], "peer-b")


def test_reports_of_the_wrong_size_are_ignored(host):
    cid = host.init()
    host.key.receive(frame(cid, Cmd.PING, b"x")[0][:63], "p")
    host.key.receive(b"\0" + frame(cid, Cmd.PING, b"x")[0], "p")
    assert host.pending() == []


def test_frame_sizes():
    assert [len(r) for r in frame(1, Cmd.PING, bytes(58))] == [REPORT_SIZE, REPORT_SIZE]
    with pytest.raises(ValueError):
        frame(1, Cmd.PING, bytes(MAX_MESSAGE + 1))
