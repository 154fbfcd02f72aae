"""The module's frame parser against the protocol's own rules (PROTOCOL.md), through real libpam.

Hypothesis writes frame sequences — well-formed, truncated, oversized, of unknown types, with NULs, verdicts real
and invented — and a replaying stand-in helper sends them. The module must land on the result the rules give, and
in particular must never say PAM_SUCCESS unless the sequence is well-formed and ends in a `success` verdict.
"""

from __future__ import annotations

import json

import pam
import pytest
from hmacunlock_pam.protocol import MAX_PAYLOAD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.pam.stack import fake_helper, module_line, pam_service, python_pam, require_pam

pytestmark = pytest.mark.root

CODES = {
    "success": pam.PAM_SUCCESS,
    "auth_err": pam.PAM_AUTH_ERR,
    "authinfo_unavail": pam.PAM_AUTHINFO_UNAVAIL,
    "user_unknown": pam.PAM_USER_UNKNOWN,
    "system_err": pam.PAM_SYSTEM_ERR,
}

clean_texts = st.text(alphabet="ab \né", max_size=12)
MUTATIONS = [
    "none",
    "bad_type",
    "oversized",
    "nul",
    "truncate",
    "trailing",
    "invented_verdict",
    "no_verdict",
    "frame_after_verdict",
]


@st.composite
def scripts(draw):
    """A well-formed exchange, then at most one way of breaking it."""
    seq = [(draw(st.sampled_from("PIEL")).encode(), draw(clean_texts).encode()) for _ in range(draw(st.integers(0, 4)))]
    seq.append(
        (
            b"V",
            draw(
                st.builds(
                    lambda c, m: c + m,
                    st.sampled_from(sorted(CODES)),
                    st.sampled_from(["", "\n"]) | clean_texts.map(lambda t: "\n" + t),
                )
            ).encode(),
        )
    )
    frames_ = [(kind, len(payload), payload) for kind, payload in seq]
    mutation = draw(st.sampled_from(MUTATIONS[:1] * 4 + MUTATIONS[1:]))
    at = draw(st.integers(0, len(frames_) - 1))
    kind, declared, payload = frames_[at]
    trailing = b""
    if mutation == "bad_type":
        frames_[at] = (draw(st.sampled_from([b"X", b"Q", b"S", b"C", b"\0", b"p"])), declared, payload)
    elif mutation == "oversized":
        frames_[at] = (kind, draw(st.sampled_from([MAX_PAYLOAD + 1, 0xFFFF])), payload)
    elif mutation == "nul":
        frames_[at] = (kind, declared + 1, payload + b"\0")
    elif mutation == "truncate":
        frames_[-1] = (b"V", len(frames_[-1][2]) + 1, frames_[-1][2])  # declares one byte more than it sends
    elif mutation == "trailing":
        trailing = draw(st.sampled_from([b"I\x00\x01x", b"\x00", b"V\x00\x07success"]))
    elif mutation == "invented_verdict":
        invented = draw(st.sampled_from([b"successful", b"Success", b"", b"ok", b" success", b"success "]))
        frames_[-1] = (b"V", len(invented), invented)
    elif mutation == "no_verdict":
        frames_.pop()
    elif mutation == "frame_after_verdict":
        frames_.append((b"I", 1, b"x"))
    return frames_, trailing


def expected(seq, trailing) -> int:
    """What the module must answer, from the rules alone."""
    for i, (kind, declared, payload) in enumerate(seq):
        last = i == len(seq) - 1
        if kind not in (b"P", b"I", b"E", b"L", b"V") or declared > MAX_PAYLOAD or b"\0" in payload:
            return pam.PAM_SYSTEM_ERR
        if declared != len(payload):  # the channel ends inside the frame
            return pam.PAM_SYSTEM_ERR
        if kind == b"V":
            code = payload.decode().split("\n")[0]
            if code not in CODES or not last or trailing:
                return pam.PAM_SYSTEM_ERR
            return CODES[code]
    return pam.PAM_SYSTEM_ERR  # no verdict


def encode(seq, trailing) -> list[dict]:
    chunks, answered = [], True
    for kind, declared, payload in seq:
        raw = kind + declared.to_bytes(2, "big") + payload
        # A well-formed prompt gets an answer: wait for it, as a real helper does.
        wait = answered and kind == b"P" and declared == len(payload) and b"\0" not in payload
        answered = wait or (
            answered and kind in (b"I", b"E", b"L") and declared == len(payload) and b"\0" not in payload
        )
        chunks.append({"hex": raw.hex(), "await": bool(wait)})
    if trailing:
        chunks.append({"hex": trailing.hex(), "await": False})
    return chunks


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    require_pam()
    directory = tmp_path_factory.mktemp("replay")
    helper = fake_helper(directory, "replay")
    with pam_service(module_line(helper=helper, timeout=10)) as service:
        yield service, helper


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scripts())
def test_the_module_answers_what_the_protocol_rules_say(replay, script):
    service, helper = replay
    helper.with_name("replay.json").write_text(json.dumps(encode(*script)))
    outcome = python_pam(service, "hmu-test-alice", "123456")
    want = expected(*script)
    assert outcome.code == want, script
    assert outcome.ok is (want == pam.PAM_SUCCESS)
