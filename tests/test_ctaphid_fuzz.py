"""Property test of CTAPHID reassembly: any sequence of 64-byte reports, any timing.

Nothing raises, everything the key sends is a well-formed CTAPHID message with a known command and error code,
the authenticator behind it keeps its state (PIN, retries, credentials), and the key still works afterwards.
"""

from __future__ import annotations

import struct
import time

import pytest
from fido2 import cbor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libhmacunlock.softkey.ctaphid import BROADCAST_CID, REPORT_SIZE, TYPE_INIT, Cmd, HidError, frame
from libhmacunlock.softkey.state import KeyState
from tests.fixtures.softkey import set_pin
from tests.fixtures.udp import FakeClock, Host, make_authenticator

PIN = "246810"
ALLOWED_REPLIES = {Cmd.INIT, Cmd.PING, Cmd.WINK, Cmd.CBOR, Cmd.KEEPALIVE, Cmd.ERROR}
KNOWN_CIDS = [BROADCAST_CID, 0, 1, 0x01020304]


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory):
    """A key with a PIN set; the state file is what must not change."""
    path = tmp_path_factory.mktemp("fuzz") / "key.json"
    authenticator = make_authenticator(path)
    set_pin(authenticator, PIN)
    return path, authenticator


def snapshot(path) -> tuple:
    state = KeyState.open(path)
    return state.pin_hash, state.pin_retries, [c.credential_id for c in state.credentials]


ALLOCATED = (4, 5)  # indices of the two channels each example allocates first

raw_reports = st.tuples(
    st.integers(0, 6),  # which channel: an index into the known + allocated ones, 6 = random
    st.integers(0, 0xFFFFFFFF),
    st.booleans(),  # INIT packet or CONT packet
    st.sampled_from([Cmd.PING, Cmd.CBOR, Cmd.INIT, Cmd.CANCEL, Cmd.WINK, Cmd.MSG, Cmd.LOCK, 0x7F, 0x00]),
    st.one_of(st.integers(0, 130), st.integers(0, 0xFFFF)),  # bcnt
    st.integers(0, 0x7F),  # seq
    st.binary(max_size=REPORT_SIZE),
).map(lambda t: ("raw", t))

# a CBOR request starts with a real command byte (never reset: that changes the state on purpose)
cbor_requests = st.builds(
    lambda c, rest: bytes([c]) + rest,
    st.sampled_from([0x01, 0x02, 0x04, 0x06, 0x08, 0x0A, 0x0B, 0x41, 0x40, 0xFF]),
    st.binary(max_size=200),
)

messages = st.tuples(
    st.sampled_from(ALLOCATED),
    st.sampled_from([Cmd.PING, Cmd.CBOR, Cmd.CBOR, Cmd.WINK, Cmd.CANCEL, Cmd.INIT]),
    st.one_of(st.binary(max_size=300), cbor_requests),
    st.sampled_from(["whole", "whole", "drop", "duplicate", "swap", "cut"]),
).map(lambda t: ("message", t))

events = st.tuples(st.one_of(raw_reports, messages), st.sampled_from([0.0, 0.0, 0.0, 0.05, 0.3, 0.6]))


def build(event, cids: list[int]) -> list[bytes]:
    """The reports of one fuzz event: a random report, or a (possibly damaged) framed message."""
    kind, fields = event
    if kind == "raw":
        which, random_cid, is_init, cmd, bcnt, seq, data = fields
        cid = cids[which] if which < len(cids) else random_cid
        if is_init and cmd == Cmd.CBOR and data[:1] == b"\x07":
            data = b"\x04" + data[1:]
        head = struct.pack(">IBH", cid, TYPE_INIT | cmd, bcnt) if is_init else struct.pack(">IB", cid, seq)
        return [(head + data)[:REPORT_SIZE].ljust(REPORT_SIZE, b"\0")]
    which, cmd, payload, damage = fields
    if cmd == Cmd.CBOR and payload[:1] == b"\x07":
        payload = b"\x04" + payload[1:]
    reports = frame(cids[which], cmd, payload)
    if damage == "drop" and len(reports) > 1:
        del reports[1]
    elif damage == "duplicate":
        reports.insert(1, reports[0])
    elif damage == "swap" and len(reports) > 2:
        reports[1], reports[2] = reports[2], reports[1]
    elif damage == "cut":
        reports = reports[:1]
    return reports


def check_messages(sent: list[bytes]) -> None:
    """Every report 64 bytes; messages well-formed and contiguous per channel; commands and errors known."""
    open_messages: dict[int, list[int]] = {}  # cid -> [bytes left, next seq]
    for report in sent:
        assert len(report) == REPORT_SIZE
        cid = struct.unpack_from(">I", report)[0]
        if report[4] & TYPE_INIT:
            assert cid not in open_messages, "new message before the last one on this channel ended"
            cmd, length = report[4] & ~TYPE_INIT, struct.unpack_from(">H", report, 5)[0]
            assert cmd in ALLOWED_REPLIES
            if cmd == Cmd.ERROR:
                assert length == 1 and report[7] in set(HidError)
            if cmd == Cmd.KEEPALIVE:
                assert length == 1 and report[7] in (1, 2)
            if length > REPORT_SIZE - 7:
                open_messages[cid] = [length - (REPORT_SIZE - 7), 0]
        else:
            left, seq = open_messages[cid]
            assert report[4] == seq
            left -= REPORT_SIZE - 5
            if left <= 0:
                del open_messages[cid]
            else:
                open_messages[cid] = [left, seq + 1]
    assert not open_messages


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(events, max_size=30))
def test_random_reports(keyfile, parts):
    path, auth = keyfile
    before = snapshot(path)
    host = Host(auth, FakeClock())
    cids = KNOWN_CIDS + [host.init(), host.init()]
    host.drain_reports()
    try:
        for event, pause in parts:
            host.clock.advance(pause)
            for report in build(event, cids):
                host.key.receive(report, "fuzzer")
            host.key.tick()
        deadline = time.monotonic() + 10
        while host.key.busy and time.monotonic() < deadline:  # a CBOR request may still be in its worker
            host.clock.advance(1.0)
            host.key.tick()
            time.sleep(0.005)
        assert not host.key.busy
        check_messages(host.drain_reports())
        assert snapshot(path) == before
        # the key still works: a fresh channel, a ping, a getInfo
        cid = host.init()
        assert host.call(cid, Cmd.PING, b"alive") == (Cmd.PING, b"alive")
        cmd, body = host.call(cid, Cmd.CBOR, b"\x04")
        assert cmd == Cmd.CBOR and body[0] == 0 and "FIDO_2_1" in cbor.decode(body[1:])[1]
    finally:
        host.key.close()
