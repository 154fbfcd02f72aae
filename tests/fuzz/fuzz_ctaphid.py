"""Fuzz target: the software key's CTAPHID reassembly (softkey.ctaphid.CtapHidKey), without sockets.

The input is a script of 65-byte steps: one control byte, then one 64-byte report. Control bits 0-1: 0/1 receive
from peer A/B, 2 let time pass ((control >> 2) * 50 ms, then tick), 3 a report of the wrong size. A report whose
first four bytes are AA AA AA AA is sent on the channel the key allocated last, so the fuzzer gets past INIT.
The CBOR processor is a stand-in that answers at once (the real one is fuzz_ctap2's target).
Invariant: receive()/tick() never raise; every report sent is 64 bytes, goes to a peer that spoke, and an ERROR
carries one of the spec's codes.
"""

from __future__ import annotations

import struct

from tests.fuzz.engine import instrumented, main

with instrumented():
    from libhmacunlock.softkey.ctaphid import REPORT_SIZE, TYPE_INIT, Cmd, CtapHidKey, HidError

PEERS = ("peer-a", "peer-b")
ERROR_CODES = {int(e) for e in HidError}
MAGIC = b"\xaa\xaa\xaa\xaa"


class _Echo:
    def process(self, request, keepalive=None, cancel=None):  # type: ignore[no-untyped-def]
        return b"\x00" + request[:32]

    def power_cycle(self) -> None:
        pass


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_input(data: bytes) -> None:
    sent: list[tuple[bytes, object]] = []
    clock = _Clock()
    key = CtapHidKey(_Echo(), lambda report, peer: sent.append((report, peer)), clock=clock)
    spoke: set[object] = set()
    last_cid = b"\0\0\0\1"
    try:
        for i in range(0, len(data), 65):
            control, report = data[i], data[i + 1 : i + 65].ljust(REPORT_SIZE, b"\0")
            action = control & 3
            if report[:4] == MAGIC:
                report = last_cid + report[4:]
            if action == 2:
                clock.now += (control >> 2) * 0.05
                key.tick()
            elif action == 3:
                key.receive(report[: control % REPORT_SIZE], PEERS[0])
            else:
                spoke.add(PEERS[action])
                key.receive(report, PEERS[action])
            for out, _ in sent[-4:]:
                if out[4] == TYPE_INIT | Cmd.INIT and struct.unpack_from(">H", out, 5)[0] == 17:
                    last_cid = out[15:19]
    finally:
        key.close()
    for out, peer in sent:
        assert len(out) == REPORT_SIZE and peer in spoke
        if out[4] == TYPE_INIT | Cmd.ERROR:
            assert out[7] in ERROR_CODES, f"unknown CTAPHID error {out[7]:#x}"


if __name__ == "__main__":
    main(test_one_input)
