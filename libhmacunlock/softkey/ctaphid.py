"""The key's side of CTAPHID (CTAP 2.1 §11.2): 64-byte reports in, 64-byte reports out, one transaction at a time.

`CtapHidKey` is a transport-independent state machine. A transport feeds it each report it receives with
`receive(report, peer)` and calls `tick()` every few tens of milliseconds (message timeouts, keepalives); the key
answers through the `send(report, peer)` callback it was built with, `peer` being whatever the transport passed in
(the UDP transport passes the sender's address, so replies go back to it).

A CBOR request runs in a worker thread, so that while the authenticator waits for a touch the key keeps answering:
KEEPALIVE every ~100 ms, CANCEL, and CHANNEL_BUSY to other channels. No CTAP1/U2F: MSG is an invalid command and
the capabilities say NMSG.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, Protocol

logger = logging.getLogger(__name__)

REPORT_SIZE = 64
BROADCAST_CID = 0xFFFFFFFF
TYPE_INIT = 0x80
INIT_DATA = REPORT_SIZE - 7  # cid(4) cmd(1) bcnt(2)
CONT_DATA = REPORT_SIZE - 5  # cid(4) seq(1)
MAX_MESSAGE = INIT_DATA + 128 * CONT_DATA  # 7609: sequence numbers run 0..127

MSG_TIMEOUT = 0.5  # seconds allowed between the packets of one message (spec: 500 ms is typical)
KEEPALIVE_INTERVAL = 0.1
MAX_CHANNELS = 1024  # allocated channel ids remembered; the oldest is forgotten first
PROTOCOL_VERSION = 2
DEVICE_VERSION = (1, 0, 0)
KEEPALIVE_CANCEL = 0x2D  # CTAP2_ERR_KEEPALIVE_CANCEL: answered to a cancelled request


class Cmd(IntEnum):
    PING = 0x01
    MSG = 0x03
    LOCK = 0x04
    INIT = 0x06
    WINK = 0x08
    CBOR = 0x10
    CANCEL = 0x11
    KEEPALIVE = 0x3B
    ERROR = 0x3F


class HidError(IntEnum):
    INVALID_CMD = 0x01
    INVALID_PAR = 0x02
    INVALID_LEN = 0x03
    INVALID_SEQ = 0x04
    MSG_TIMEOUT = 0x05
    CHANNEL_BUSY = 0x06
    INVALID_CHANNEL = 0x0B
    OTHER = 0x7F


class Capability(IntFlag):
    WINK = 0x01
    CBOR = 0x04
    NMSG = 0x08


class KeepaliveStatus(IntEnum):
    PROCESSING = 1
    UPNEEDED = 2


CAPABILITIES = Capability.WINK | Capability.CBOR | Capability.NMSG


class Processor(Protocol):
    """What the key needs of an authenticator (libhmacunlock.softkey.authenticator.Authenticator)."""

    def process(
        self,
        request: bytes,
        *,
        keepalive: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> bytes: ...

    def power_cycle(self) -> None: ...


Send = Callable[[bytes, Any], None]


@dataclass
class _Transaction:
    """The one message being received or processed."""

    cid: int
    peer: Any
    cmd: int
    length: int
    data: bytearray = field(default_factory=bytearray)
    next_seq: int = 0
    last_packet: float = 0.0
    # set once the whole request is in and the worker runs it
    worker: threading.Thread | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    status: int = KeepaliveStatus.PROCESSING
    last_keepalive: float = 0.0
    abandoned: bool = False  # resynced or power-cycled: the worker's answer is dropped

    @property
    def complete(self) -> bool:
        return len(self.data) >= self.length


def frame(cid: int, cmd: int, payload: bytes) -> list[bytes]:
    """Split one message into an INIT report and CONT reports, each padded to REPORT_SIZE."""
    if len(payload) > MAX_MESSAGE:
        raise ValueError("message too long for CTAPHID")
    reports = [struct.pack(">IBH", cid, TYPE_INIT | cmd, len(payload)) + payload[:INIT_DATA]]
    rest, seq = payload[INIT_DATA:], 0
    while rest:
        reports.append(struct.pack(">IB", cid, seq) + rest[:CONT_DATA])
        rest, seq = rest[CONT_DATA:], seq + 1
    return [r.ljust(REPORT_SIZE, b"\0") for r in reports]


class CtapHidKey:
    """One CTAPHID device: channels, reassembly, dispatch, keepalive, cancel, busy, timeouts."""

    def __init__(
        self,
        authenticator: Processor,
        send: Send,
        *,
        clock: Callable[[], float] = time.monotonic,
        msg_timeout: float = MSG_TIMEOUT,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
    ) -> None:
        self.authenticator = authenticator
        self._send = send
        self._clock = clock
        self._msg_timeout = msg_timeout
        self._keepalive_interval = keepalive_interval
        self._lock = threading.Lock()
        self._channels: OrderedDict[int, None] = OrderedDict()
        self._next_cid = int.from_bytes(os.urandom(2), "big") + 1  # never 0, far from BROADCAST
        self._txn: _Transaction | None = None

    # --- input -------------------------------------------------------------------------------------------------

    def receive(self, report: bytes, peer: Any = None) -> None:
        """Handle one report from the host. Malformed reports get a CTAPHID error or are ignored, never raise."""
        if len(report) != REPORT_SIZE:
            return  # a HID report always has the descriptor's size; anything else is not one
        with self._lock:
            self._expire(self._clock())
            cid = struct.unpack_from(">I", report)[0]
            if report[4] & TYPE_INIT:
                self._init_packet(cid, report[4] & ~TYPE_INIT, struct.unpack_from(">H", report, 5)[0], report, peer)
            else:
                self._cont_packet(cid, report[4], report, peer)

    def tick(self) -> None:
        """Let time pass: expire half-received messages, send keepalives for the running request."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            txn = self._txn
            if txn and txn.worker and not txn.abandoned and now - txn.last_keepalive >= self._keepalive_interval:
                txn.last_keepalive = now
                self._emit(txn.cid, Cmd.KEEPALIVE, bytes([txn.status]), txn.peer)

    def power_cycle(self) -> None:
        """Unplug and plug back in: abort the transaction, forget every channel, reset the authenticator's RAM."""
        with self._lock:
            worker = self._abandon()
            self._channels.clear()
        if worker:
            worker.join(timeout=5.0)
        self.authenticator.power_cycle()

    def close(self) -> None:
        """Stop: cancel a running request and wait briefly for its worker."""
        with self._lock:
            worker = self._abandon()
        if worker:
            worker.join(timeout=5.0)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._txn is not None

    # --- packets -----------------------------------------------------------------------------------------------

    def _init_packet(self, cid: int, cmd: int, length: int, report: bytes, peer: Any) -> None:
        if cid == 0:
            return self._error(cid, HidError.INVALID_CHANNEL, peer)
        if cid == BROADCAST_CID:
            if cmd != Cmd.INIT:
                return self._error(cid, HidError.INVALID_CHANNEL, peer)
        elif cid not in self._channels:
            return self._error(cid, HidError.INVALID_CHANNEL, peer)
        if cmd == Cmd.INIT:  # INIT is answered at once, even while busy: it is also how a host resyncs
            return self._init(cid, length, report[7 : 7 + min(length, INIT_DATA)], peer)
        txn = self._txn
        if cmd == Cmd.CANCEL:
            # No answer to CANCEL itself; the cancelled request answers KEEPALIVE_CANCEL.
            if txn and txn.cid == cid and txn.worker:
                txn.cancel.set()
            return None
        if txn is not None:
            if txn.cid != cid:
                return self._error(cid, HidError.CHANNEL_BUSY, peer)
            if txn.worker is None:  # a new message before the last one was complete
                self._txn = None
                return self._error(cid, HidError.INVALID_SEQ, peer)
            return self._error(cid, HidError.CHANNEL_BUSY, peer)
        if length > MAX_MESSAGE:
            return self._error(cid, HidError.INVALID_LEN, peer)
        txn = _Transaction(cid, peer, cmd, length, bytearray(report[7 : 7 + min(length, INIT_DATA)]))
        txn.last_packet = self._clock()
        self._txn = txn
        if txn.complete:
            self._dispatch(txn)

    def _cont_packet(self, cid: int, seq: int, report: bytes, peer: Any) -> None:
        txn = self._txn
        if txn is None or txn.cid != cid or txn.worker is not None:
            return None  # spurious continuation packets are ignored (spec)
        if seq != txn.next_seq:
            self._txn = None
            return self._error(cid, HidError.INVALID_SEQ, peer)
        txn.next_seq += 1
        txn.data += report[5 : 5 + min(CONT_DATA, txn.length - len(txn.data))]
        txn.last_packet = self._clock()
        txn.peer = peer
        if txn.complete:
            self._dispatch(txn)

    def _expire(self, now: float) -> None:
        txn = self._txn
        if txn and txn.worker is None and now - txn.last_packet > self._msg_timeout:
            self._txn = None
            self._error(txn.cid, HidError.MSG_TIMEOUT, txn.peer)

    # --- commands ----------------------------------------------------------------------------------------------

    def _init(self, cid: int, length: int, nonce: bytes, peer: Any) -> None:
        if length != 8:
            return self._error(cid, HidError.INVALID_LEN, peer)
        txn = self._txn
        if cid == BROADCAST_CID:
            new_cid = self._allocate()
        else:
            new_cid = cid
            if txn and txn.cid == cid:  # resync: drop what this channel had in flight
                self._abandon()
        body = nonce + struct.pack(">IB3BB", new_cid, PROTOCOL_VERSION, *DEVICE_VERSION, CAPABILITIES)
        self._emit(cid, Cmd.INIT, body, peer)

    def _dispatch(self, txn: _Transaction) -> None:
        data = bytes(txn.data[: txn.length])
        if txn.cmd == Cmd.PING:
            self._txn = None
            return self._emit(txn.cid, Cmd.PING, data, txn.peer)
        if txn.cmd == Cmd.WINK:
            self._txn = None
            if data:
                return self._error(txn.cid, HidError.INVALID_LEN, txn.peer)
            return self._emit(txn.cid, Cmd.WINK, b"", txn.peer)
        if txn.cmd == Cmd.CBOR:
            if not data:
                self._txn = None
                return self._error(txn.cid, HidError.INVALID_LEN, txn.peer)
            return self._start_worker(txn, data)
        # MSG (no U2F: NMSG), LOCK (optional, not offered), vendor and unknown commands
        self._txn = None
        return self._error(txn.cid, HidError.INVALID_CMD, txn.peer)

    def _start_worker(self, txn: _Transaction, request: bytes) -> None:
        txn.last_keepalive = self._clock()
        txn.worker = threading.Thread(target=self._run, args=(txn, request), name="ctaphid-cbor", daemon=True)
        txn.worker.start()

    def _run(self, txn: _Transaction, request: bytes) -> None:
        def keepalive(status: int) -> None:
            txn.status = status  # sent by tick(); the authenticator's thread never touches the transport

        try:
            response = self.authenticator.process(request, keepalive=keepalive, cancel=txn.cancel)
        except Exception:  # process() never raises by contract; should it, the host still gets an answer
            logger.exception("authenticator raised")
            response = None
        with self._lock:
            if self._txn is txn:
                self._txn = None
            if txn.abandoned:
                return
            if response is None:
                self._error(txn.cid, HidError.OTHER, txn.peer)
            else:
                self._emit(txn.cid, Cmd.CBOR, response, txn.peer)

    # --- helpers -----------------------------------------------------------------------------------------------

    def _abandon(self) -> threading.Thread | None:
        """Drop the transaction in flight; a running request is cancelled and its answer discarded."""
        txn, self._txn = self._txn, None
        if txn is None or txn.worker is None:
            return None
        txn.abandoned = True
        txn.cancel.set()
        # the channel stays busy until the worker returns, so a new request cannot overlap the old one
        self._txn = txn
        return txn.worker

    def _allocate(self) -> int:
        cid = self._next_cid
        self._next_cid = self._next_cid % 0xFFFFFFFE + 1  # 1..0xFFFFFFFE: never 0 nor broadcast
        self._channels[cid] = None
        while len(self._channels) > MAX_CHANNELS:
            self._channels.popitem(last=False)
        return cid

    def _error(self, cid: int, code: HidError, peer: Any) -> None:
        self._emit(cid, Cmd.ERROR, bytes([code]), peer)

    def _emit(self, cid: int, cmd: int, payload: bytes, peer: Any) -> None:
        for report in frame(cid, cmd, payload):
            try:
                self._send(report, peer)
            except OSError as exc:  # the host went away: nothing to tell it
                logger.debug("send failed: %s", exc)
                return
