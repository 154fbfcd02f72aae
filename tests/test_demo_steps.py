"""The demo's step runner and its small helpers, without running the story."""

from __future__ import annotations

import io
import json

import pytest
from hmacunlock_cli.demo_steps import Outcome, Step, StepFailed, StepSkipped, Transcript, run_steps, summarise
from hmacunlock_cli.demo_story import _keyslots_and_tokens, _mask


def _raise(exc: Exception):
    def run() -> None:
        raise exc

    return run


def _transcript() -> tuple[Transcript, io.StringIO]:
    log = io.StringIO()
    return Transcript(out=io.StringIO(), log=log), log


def test_a_failed_step_skips_what_needs_it_and_fails_the_summary():
    t, log = _transcript()
    results = run_steps(
        [
            Step("a", "A", _raise(StepFailed("broke"))),
            Step("b", "B", lambda: None, needs=("a",)),
            Step("c", "C", lambda: None),
        ],
        t,
    )
    assert [(r.id, r.outcome) for r in results] == [("a", Outcome.FAILED), ("b", Outcome.SKIPPED), ("c", Outcome.OK)]
    assert "'a'" in results[1].reason
    assert summarise(results, t) is False
    entries = [json.loads(line) for line in log.getvalue().splitlines()]
    assert entries[-1] == {"schema": 1, "summary": {"a": "failed", "b": "skipped", "c": "ok"}, "ok": False}


def test_a_skipped_step_is_not_a_failure_but_its_dependents_skip_too():
    t, _ = _transcript()
    results = run_steps(
        [Step("a", "A", _raise(StepSkipped("needs root"))), Step("b", "B", lambda: None, needs=("a",))], t
    )
    assert [r.outcome for r in results] == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert results[0].reason == "needs root"
    assert summarise(results, t) is True


def test_a_bug_in_a_step_is_a_failure_named_by_type_and_the_story_goes_on():
    t, _ = _transcript()
    results = run_steps([Step("a", "A", _raise(KeyError("x"))), Step("b", "B", lambda: None)], t)
    assert results[0].outcome is Outcome.FAILED and "KeyError" in results[0].reason
    assert results[1].outcome is Outcome.OK


def test_ctrl_c_is_not_swallowed_by_a_step():
    t, _ = _transcript()
    with pytest.raises(KeyboardInterrupt):
        run_steps([Step("a", "A", _raise(KeyboardInterrupt()))], t)


def test_recovery_key_is_masked_but_keeps_its_shape():
    assert _mask("ABCD-EFGH-IJKL") == "ABCD-****-****"
    assert _mask("ABCDEFGH") == "ABCD****"


def test_luks_dump_keeps_keyslots_and_tokens_only():
    dump = (
        "LUKS header information\nVersion:       \t2\n\nData segments:\n  0: crypt\n\toffset: 16777216\n"
        "Keyslots:\n  0: luks2\n\tKey:        512 bits\n  1: luks2\n\tPBKDF:      pbkdf2\n"
        "Tokens:\n  0: hmacunlock\n\tKeyslot:    1\nDigests:\n  0: pbkdf2\n"
    )
    assert _keyslots_and_tokens(dump).splitlines() == [
        "Keyslots:",
        "  0: luks2",
        "  1: luks2",
        "Tokens:",
        "  0: hmacunlock",
        "    Keyslot:    1",
    ]
