"""Regenerate the seed corpora in tests/fuzz/corpus/ from real traffic: `python -m tests.fuzz.seeds`.

The CTAP2 seeds are the requests python-fido2 sends during a real enroll and unlock against the software key; the
CTAPHID seeds frame some of them; the record seeds are real records; the PAM seeds are what the module sends.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

from libhmacunlock.enroll import enroll
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.ctaphid import BROADCAST_CID, Cmd, frame
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.unlock import unlock
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey

CORPUS = Path(__file__).resolve().parent / "corpus"
MAGIC = b"\xaa\xaa\xaa\xaa"


class _Recording(SoftKeyDevice):
    def __init__(self, inner: SoftKeyDevice) -> None:
        super().__init__(inner.authenticator)
        self.requests: list[bytes] = []

    def call(self, cmd, data=b"", event=None, on_keepalive=None):  # type: ignore[no-untyped-def]
        self.requests.append(bytes(data))
        return super().call(cmd, data, event, on_keepalive)


def _write(target: str, blobs: list[bytes]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for blob in blobs:
        (folder / hashlib.sha1(blob, usedforsecurity=False).hexdigest()[:16]).write_bytes(blob)


def _hid_script(messages: list[bytes]) -> bytes:
    """INIT on the broadcast channel, then each CTAP2 message framed on the allocated channel (MAGIC)."""
    steps = [b"\x00" + frame(BROADCAST_CID, Cmd.INIT, os.urandom(8))[0]]
    for message in messages:
        steps += [b"\x00" + MAGIC + report[4:] for report in frame(0xAAAAAAAA, Cmd.CBOR, message)]
        steps.append(b"\x0a" + bytes(64))  # let 100 ms pass
    return b"".join(step.ljust(65, b"\0") for step in steps)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        device = _Recording(make_pinned_softkey(Path(tmp) / "key.json"))
        store = Path(tmp) / "store"
        enroll(str(store), device, ScriptedInteraction([TEST_PIN]), "alice")
        unlock(str(store), device, ScriptedInteraction([TEST_PIN]), user="alice")
        record = (store / "alice.json").read_bytes()
    ctap = device.requests
    _write("ctap2", ctap + [b"\x04", b"\x06\xa2\x01\x02\x02\x01", b"\x0b"])
    _write(
        "ctaphid",
        [
            _hid_script(ctap[:3]),
            _hid_script([m for m in ctap if m[:1] == b"\x02"][:1]),
            _hid_script([]) + b"\x02" + MAGIC + b"\x91" + bytes(59),
        ],
    )
    _write("record", [record, b'{"schema": 1, "user": "alice"}', b'{"schema": 1, "user": "alice", "slots": [{}]}'])
    request = b"user=alice\nstore=/var/lib/hmacunlock\ndevice=udp:127.0.0.1:8111\nmax_tries=3\nnouserok=1\ncue=1\n"
    frames = b"Q" + struct.pack(">H", len(request)) + request + b"S\x00\x06" + TEST_PIN.encode() + b"C\x00\x00"
    _write("pam_protocol", [request, frames, b"user=bob\n"])


if __name__ == "__main__":
    main()
