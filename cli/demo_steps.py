"""The demo's step runner: a numbered story, each step timed, its outcome printed and logged.

A step ends in one of three outcomes: ok, skipped (with the reason: not root, a tool missing, a step it needs did
not succeed) or failed (with what went wrong). The transcript is for people; the optional JSON-lines log
(`--json-log`) is for tests and holds no secret: step ids, outcomes, reasons and durations only.
"""

from __future__ import annotations

import enum
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from .options import JSON_SCHEMA


class Outcome(str, enum.Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


class StepSkipped(Exception):
    """Raised by a step that cannot run here; the message says why."""


class StepFailed(Exception):
    """Raised by a step whose check did not hold; the message says which."""


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    run: Callable[[], None]
    needs: tuple[str, ...] = ()


@dataclass
class StepResult:
    id: str
    title: str
    outcome: Outcome
    seconds: float
    reason: str = ""


@dataclass
class Transcript:
    """Where the story is told: stdout for people, an optional JSON-lines file for machines."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    log: TextIO | None = None

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        self.say(f"  {text}")

    def output(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            self.say(f"    | {line}")

    def record(self, entry: dict) -> None:
        if self.log is not None:
            self.log.write(json.dumps({"schema": JSON_SCHEMA, **entry}, sort_keys=True) + "\n")
            self.log.flush()


def run_steps(steps: list[Step], transcript: Transcript) -> list[StepResult]:
    """Run the steps in order; a step whose needs did not all succeed is skipped and says which."""
    results: dict[str, StepResult] = {}
    for number, step in enumerate(steps, 1):
        transcript.say()
        transcript.say(f"[{number}/{len(steps)}] {step.title}")
        unmet = [n for n in step.needs if results.get(n) is None or results[n].outcome is not Outcome.OK]
        start = time.monotonic()
        if unmet:
            outcome, reason = Outcome.SKIPPED, f"needs step {unmet[0]!r}, which did not succeed"
        else:
            outcome, reason = _run_one(step)
        result = StepResult(step.id, step.title, outcome, time.monotonic() - start, reason)
        results[step.id] = result
        _report(result, transcript)
    return list(results.values())


def _run_one(step: Step) -> tuple[Outcome, str]:
    try:
        step.run()
    except StepSkipped as exc:
        return Outcome.SKIPPED, str(exc)
    except StepFailed as exc:
        return Outcome.FAILED, str(exc)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug in the demo itself: name it, and go on with the story
        return Outcome.FAILED, f"the demo itself failed ({type(exc).__name__}: {exc})"
    return Outcome.OK, ""


def _report(result: StepResult, transcript: Transcript) -> None:
    line = f"  => {result.outcome.value} ({result.seconds:.2f} s)"
    if result.reason:
        line += f": {result.reason}"
    transcript.say(line)
    transcript.record(
        {
            "step": result.id,
            "outcome": result.outcome.value,
            "seconds": round(result.seconds, 3),
            "reason": result.reason,
        }
    )


def summarise(results: list[StepResult], transcript: Transcript) -> bool:
    """Print the summary table; True when every step that ran succeeded."""
    transcript.say()
    transcript.say("Summary")
    width = max(len(r.id) for r in results)
    for r in results:
        transcript.say(f"  {r.id:<{width}}  {r.outcome.value:<7}  {r.seconds:6.2f} s  {r.reason}".rstrip())
    ok = all(r.outcome is not Outcome.FAILED for r in results)
    transcript.record({"summary": {r.id: r.outcome.value for r in results}, "ok": ok})
    return ok
