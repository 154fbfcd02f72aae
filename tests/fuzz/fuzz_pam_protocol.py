"""Fuzz target: the PAM helper's side of the pipe protocol (hmacunlock_pam.protocol: frames and the request).

Invariant: any bytes from the module side give frames and requests that obey PROTOCOL.md, or ProtocolError —
never another exception (the helper would then die with a traceback instead of failing closed on purpose).
"""

from __future__ import annotations

import os

from tests.fuzz.engine import instrumented, main

with instrumented():
    from hmacunlock_pam.protocol import MAX_PAYLOAD, MAX_TRIES_LIMIT, Channel, Frame, ProtocolError, Request

FROM_MODULE = {Frame.REQUEST, Frame.SECRET, Frame.CONV_FAILED}


def test_one_input(data: bytes) -> None:
    _request(data)
    _frames(data[:60000])  # a pipe holds 64 KiB: the writer must not block


def _request(payload: bytes) -> None:
    try:
        request = Request.parse(payload)
    except ProtocolError:
        return
    assert request.user and "/" not in request.user and "\n" not in request.user and "=" not in request.user
    assert 1 <= request.max_tries <= MAX_TRIES_LIMIT


def _frames(stream: bytes) -> None:
    r, w = os.pipe()
    try:
        os.write(w, stream)
        os.close(w)
        w = -1
        chan = Channel(r, -1)
        for turn in range(len(stream) + 1):
            try:
                if turn % 2:
                    secret = chan.read_secret()
                    assert secret is None or isinstance(secret, str)
                    continue
                kind, payload = chan.read()
            except ProtocolError:
                return
            assert kind in FROM_MODULE and len(payload) <= MAX_PAYLOAD and 0 not in payload
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


if __name__ == "__main__":
    main(test_one_input)
