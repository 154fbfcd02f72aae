"""What the benchmark measured, and the Markdown it prints and writes to bench/results.md."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .keyside import Message, names
from .micro import Rate
from .stats import Summary, ms, ms_summary, ratio

PAM_U2F = "pam-u2f"
WARM = "hmacunlock default (warm helper)"  # the module with socket=: hmacunlock_pam.warm serves the sign-in
OURS = "hmacunlock spawned (fallback)"  # the module spawning `python -I -m hmacunlock_pam.helper` per sign-in


@dataclass
class Contender:
    name: str
    service: str  # /etc/pam.d name
    env: dict[str, str]  # pamtester's environment (the shim for pam-u2f)


@dataclass
class SignIn:
    contender: str
    total: float  # pamtester start -> exit
    first_prompt: float | None  # pamtester start -> first byte on the terminal
    after_pin: float | None  # PIN written -> exit
    messages: list[Message] = field(default_factory=list)
    started: float = 0.0  # CLOCK_MONOTONIC at pamtester's fork (the base of Message.start)

    @property
    def key_seconds(self) -> float:
        return sum(m.seconds for m in self.messages)

    @property
    def pin_at(self) -> float | None:
        return None if self.after_pin is None else self.started + self.total - self.after_pin

    def after_enter(self) -> dict[str, float] | None:
        """The time from the PIN to the exit, split by what the key's timeline shows: before the first message,
        inside the key, between messages (the client's work), after the last (checks, verdict, exit)."""
        pin_at = self.pin_at
        if pin_at is None:
            return None
        after = [m for m in self.messages if m.start >= pin_at]
        end = self.started + self.total
        if not after:
            return {"to_first": 0.0, "in_key": 0.0, "between": 0.0, "after_last": end - pin_at, "count": 0}
        in_key = sum(m.seconds for m in after)
        last_end = after[-1].start + after[-1].seconds
        return {
            "to_first": after[0].start - pin_at,
            "in_key": in_key,
            "between": max(0.0, last_end - after[0].start - in_key),
            "after_last": end - last_end,
            "count": len(after),
        }

    def messages_after_enter(self) -> list[Message]:
        pin_at = self.pin_at
        return [m for m in self.messages if pin_at is not None and m.start >= pin_at]


@dataclass
class Measurements:
    rounds: int
    user: str
    typing_delay: float
    typed_delay: float
    command: str
    versions: dict[str, str]
    signins: list[SignIn] = field(default_factory=list)
    typed: list[SignIn] = field(default_factory=list)
    slow: list[SignIn] = field(default_factory=list)  # the same contenders against the softkey's `slow` profile
    slow_typed: list[SignIn] = field(default_factory=list)  # and there with the PIN typed in typed_delay
    slow_note: str = ""  # why there is no slow run, if there is none
    variants: list[SignIn] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    unlock_times: list[float] = field(default_factory=list)
    unlock_messages: list[list[Message]] = field(default_factory=list)
    warm_unlock: list[float] = field(default_factory=list)
    prompt_floor: list[float] = field(default_factory=list)
    imports: dict[str, Summary | None] = field(default_factory=dict)
    heavy_imports: list[tuple[str, float]] = field(default_factory=list)
    rates: list[Rate] = field(default_factory=list)
    crypto: list[Rate] = field(default_factory=list)
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))

    def raw(self) -> dict[str, Any]:
        return {
            "when": self.when,
            "versions": self.versions,
            "signins": [asdict(s) for s in self.signins],
            "typed": [asdict(s) for s in self.typed],
            "slow": [asdict(s) for s in self.slow],
            "slow_typed": [asdict(s) for s in self.slow_typed],
            "variants": [asdict(s) for s in self.variants],
            "probes": self.probes,
            "unlock": self.unlock_times,
            "warm_unlock": self.warm_unlock,
            "prompt_floor": self.prompt_floor,
        }


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def markdown(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(self.header) + " |",
            "|" + "|".join("---" for _ in self.header) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def ratio_cell(a: Summary | None, b: Summary | None) -> str:
    r = ratio(a, b)
    return "–" if r is None else f"**{r:.2f}**"


def of(signins: Sequence[SignIn], who: str, attr: str) -> Summary | None:
    return Summary.of([v for s in signins if s.contender == who and (v := getattr(s, attr)) is not None])


def message_summary(runs: Sequence[Sequence[Message]]) -> str:
    """Each distinct sequence of messages the rounds sent, with how many rounds sent it: '3 (getKeyAgreement,
    getPinUvAuthTokenUsingPin, getAssertion)', or '… in 19 of 20 rounds; 5 (…) in 1' when they differ."""
    if not runs:
        return "–"
    kinds: dict[str, int] = {}
    for messages in runs:
        label = f"{len(messages)} ({names(list(messages))})" if messages else "0"
        kinds[label] = kinds.get(label, 0) + 1
    if len(kinds) == 1:
        return next(iter(kinds))
    ordered = sorted(kinds.items(), key=lambda kv: -kv[1])
    return "; ".join(f"{label} in {n} of {len(runs)} rounds" for label, n in ordered)


def _message_cell(signins: Sequence[SignIn], who: str) -> str:
    return message_summary([s.messages for s in signins if s.contender == who])


def signin_table(m: Measurements, signins: Sequence[SignIn] | None = None, title: str | None = None) -> Table:
    signins = m.signins if signins is None else signins
    rounds = len([s for s in signins if s.contender == PAM_U2F])
    t = Table(
        title or f"Sign-in through PAM (pamtester), {rounds} rounds each, median (IQR), ms",
        ["", PAM_U2F, WARM, "ratio default / pam-u2f", OURS, "ratio spawned / pam-u2f"],
    )

    def row(label: str, rows: Sequence[SignIn], attr: str) -> None:
        a, c, b = of(rows, PAM_U2F, attr), of(rows, WARM, attr), of(rows, OURS, attr)
        t.add(label, ms_summary(a), ms_summary(c), ratio_cell(c, a), ms_summary(b), ratio_cell(b, a))

    for label, attr in [
        ("sign-in, wall time", "total"),
        ("time to first prompt", "first_prompt"),
        ("after the PIN is entered", "after_pin"),
        ("inside the key", "key_seconds"),
    ]:
        row(label, signins, attr)
    typed = m.typed if signins is m.signins else m.slow_typed if signins is m.slow else []
    if typed:
        who = len({s.contender for s in typed})
        for label, attr in [("sign-in, wall time", "total"), ("after the PIN is entered", "after_pin")]:
            row(f"{label}, PIN typed in {m.typed_delay:.1f} s ({len(typed) // who} rounds)", typed, attr)
    t.add(
        "CTAP2 messages per sign-in",
        _message_cell(signins, PAM_U2F),
        _message_cell(signins, WARM),
        "",
        _message_cell(signins, OURS),
        "",
    )
    t.note = (
        f"The PIN is typed {m.typing_delay * 1000:.0f} ms after the prompt shows and the terminal's echo is off "
        "(the typed row: while the person types, our helper prepares: imports, record, key, key agreement). "
        "CTAP2 messages are counted at the key; CTAPHID INIT is not a CTAP2 message. pam-u2f runs with "
        "`pinverification=1`, our module with its defaults; both with `cue`. The default configuration is our "
        "module with `socket=` and `hmacunlock pam warm-helper` running (what the package installs: the library "
        "imported once; each sign-in served by one of its pre-forked spare children, which rehearsed a sign-in "
        "before it came and exits after it); the spawned fallback is the module without a warm helper."
    )
    return t


def after_enter_table(m: Measurements) -> Table:
    """What the time after Enter is made of, per stack, from the key's own timeline (both stacks alike)."""
    t = Table(
        "After Enter, split by the key's timeline, median (IQR), ms",
        [
            "stack, PIN typed",
            "PIN → first message",
            "inside the key",
            "between messages (client)",
            "last message → sign-in ends",
            "messages after Enter",
        ],
    )
    headline = "at once" if not m.typing_delay else f"in {m.typing_delay:.1f} s"  # the headline rounds' typing
    sets = [(headline, m.signins)] + ([(f"in {m.typed_delay:.1f} s", m.typed)] if m.typed else [])
    if m.slow:
        sets.append((f"{headline}, `slow` key", m.slow))
    if m.slow_typed:
        sets.append((f"in {m.typed_delay:.1f} s, `slow` key", m.slow_typed))
    for typed, rows in sets:
        for who in (PAM_U2F, WARM, OURS):
            mine = [s for s in rows if s.contender == who]
            splits = [x for s in mine if (x := s.after_enter()) is not None]
            if not splits:
                continue
            cells = [ms_summary(Summary.of([x[k] for x in splits])) for k in ("to_first", "in_key", "between")]
            cells.append(ms_summary(Summary.of([x["after_last"] for x in splits])))
            t.add(f"{who}, {typed}", *cells, message_summary([s.messages_after_enter() for s in mine]))
    t.note = (
        "Times from the pty (the PIN written, pamtester's exit) and from the key (each message's arrival and its "
        "time inside), one clock. 'Between messages' is the client's work while the key waits for it (CBOR, "
        "ECDH, the PIN token's decryption); 'last message → sign-in ends' holds the checks of the assertion, the "
        "verdict, the module and PAM's end (our record write comes after the verdict, off this path). With the "
        "PIN typed at once, our helper's preparation (imports, the record, the key's open, the key agreement) is "
        "after Enter too; typed in 0.6 s, it is done while the person types."
    )
    return t


SPLIT_STEPS = [
    (
        "pamtester start → helper's first line (pamtester, libpam, fork, exec, interpreter start-up)",
        "pamtester_start",
        "exec",
    ),
    ("probe's own start-up (not in unprobed runs)", "exec", "python_up"),
    ("helper's imports before the prompt (hmacunlock_pam.helper)", "python_up", "helper_imported"),
    ("→ PIN prompt sent (harden, request)", "helper_imported", "prompt_sent"),
    ("prompt sent → shown on the terminal (module, conversation)", "prompt_sent", "first_output"),
    ("import of the library, after the prompt (overlaps typing)", "preload_start", "preload_end"),
    (
        "library loaded → PIN read (record, key open, getInfo, key agreement: overlaps typing)",
        "preload_end",
        "pin_received",
    ),
    ("PIN read → verified (token, assertion, checks)", "pin_received", "unlock_end"),
    ("verified → verdict sent", "unlock_end", "verdict"),
    (
        "verdict → pamtester exits (end of file, fork of the writer, exit, module reaps it, PAM ends)",
        "verdict",
        "pamtester_end",
    ),
]


def _mark(record: dict, name: str) -> float | None:
    return record.get(name, record["marks"].get(name))


def split_table(records: list[dict]) -> Table:
    t = Table(f"Our helper's time split, {len(records)} probed sign-ins, median (IQR), ms", ["step", "time"])
    for label, a, b in SPLIT_STEPS:
        values = [max(0.0, y - x) for r in records if (x := _mark(r, a)) is not None and (y := _mark(r, b)) is not None]
        t.add(label, ms_summary(Summary.of(values)))
    for category, label in [
        ("ctap", "…in unlock(): CTAPHID round trips, INIT included (client side)"),
        ("crypto", "…in unlock(): libhmacunlock.keys + verify (HKDF, AES-GCM, ECDSA)"),
        ("store", "…in unlock(): libhmacunlock.store (read, lock, write, fsync)"),
    ]:
        counts = "/".join(str(c) for c in sorted({r["counts"].get(category, 0) for r in records}))
        t.add(f"{label}, {counts} calls", ms_summary(Summary.of([r["totals"].get(category, 0.0) for r in records])))
    t.add(
        "…in unlock(): inside the key (server side)",
        ms_summary(Summary.of([sum(x["seconds"] for x in r["messages"]) for r in records])),
    )
    t.add(
        "total (pamtester start → exit)",
        ms_summary(Summary.of([r["pamtester_end"] - r["pamtester_start"] for r in records])),
    )
    t.note = (
        "Probed rounds run the helper through `helper=` with timers around its seams (bench/helper_probe.py), "
        "so their total is a little above the headline's; the headline rounds run the helper unmodified."
    )
    return t


def variants_table(m: Measurements) -> Table:
    t = Table(
        f"What-if: helper variants through `helper=`, {len(m.prompt_floor) or '?'} rounds each, median (IQR), ms",
        ["helper", "sign-in, wall time", "time to first prompt", "after the PIN is entered"],
    )
    for who in dict.fromkeys(s.contender for s in m.variants):
        t.add(who, *(ms_summary(of(m.variants, who, attr)) for attr in ("total", "first_prompt", "after_pin")))
    if m.prompt_floor:
        fa = of(m.signins, PAM_U2F, "first_prompt")
        floor = Summary.of(m.prompt_floor)
        t.add(
            "a /bin/sh stand-in that sends the prompt at once (no Python before the prompt; "
            f"pam-u2f's first prompt: {ms(fa.median if fa else None)})",
            "–",
            ms_summary(floor),
            "–",
        )
    t.note = (
        "The first three run the unmodified hmacunlock_pam.helper.main() from a `helper=` script; the stand-in "
        "is what a prompt sent by the native module itself, or by an already running helper, would cost "
        "(bench/helper_probe.py)."
    )
    return t


def unlock_table(m: Measurements) -> Table:
    t = Table("The library's unlock on its own, median (IQR), ms", ["", "time", "CTAP2 messages"])
    t.add(
        f"`hmacunlock unlock` end to end, a new process, PIN on stdin ({len(m.unlock_times)} runs)",
        ms_summary(Summary.of(m.unlock_times)),
        message_summary(m.unlock_messages),
    )
    t.add(
        f"unlock() in an already warm process ({len(m.warm_unlock)} calls): the floor for a pre-started helper",
        ms_summary(Summary.of(m.warm_unlock)),
        "",
    )
    return t


def import_table(m: Measurements) -> Table:
    t = Table("A fresh Python process, wall time, median (IQR), ms", ["what", "time"])
    for label, s in m.imports.items():
        t.add(label, ms_summary(s))
    if m.heavy_imports:
        t.note = (
            "Heaviest imports under `import libhmacunlock.unlock` (python -X importtime, cumulative, top two "
            "levels): " + ", ".join(f"{n} {ms(v)}" for n, v in m.heavy_imports) + "."
        )
    return t


def rate_table(rates: Sequence[Rate]) -> Table:
    t = Table(
        "The software key's throughput next to the raw crypto (one thread, this machine)",
        ["operation", "per second", "each (ms)"],
        note="An assertion with hmac-secret costs the key one ECDH, one ECDSA sign and a few HMAC/AES "
        "operations: well under 0.1 ms of crypto; the rest is Python, CBOR and the transport.",
    )
    for r in rates:
        t.add(r.name, f"{r.per_second:,.0f}", f"{r.each * 1000:.3f}")
    return t


def _median(rows: Sequence[SignIn], who: str, attr: str) -> str:
    s = of(rows, who, attr)
    return ms(s.median if s else None)


def _count(rows: Sequence[SignIn], who: str) -> str:
    return "/".join(str(c) for c in sorted({len(s.messages) for s in rows if s.contender == who})) or "–"


def headline(m: Measurements) -> str:
    def line(rows: Sequence[SignIn], where: str) -> str:
        a, c, b = (of(rows, who, "total") for who in (PAM_U2F, WARM, OURS))
        return (
            f"**Headline{where}:** sign-in median {_median(rows, WARM, 'total')} ms ({WARM}) vs "
            f"{_median(rows, PAM_U2F, 'total')} ms (pam-u2f): ratio default / pam-u2f {ratio_cell(c, a)}, with "
            f"{_count(rows, WARM)} CTAP messages against pam-u2f's {_count(rows, PAM_U2F)}; {OURS}: "
            f"{_median(rows, OURS, 'total')} ms, ratio {ratio_cell(b, a)}, {_count(rows, OURS)} messages. Time "
            f"to first prompt {_median(rows, WARM, 'first_prompt')} / {_median(rows, OURS, 'first_prompt')} vs "
            f"{_median(rows, PAM_U2F, 'first_prompt')} ms."
        )

    text = line(m.signins, "")
    if m.slow:
        text += "\n\n" + line(m.slow, ", against the software key's `slow` profile")
    elif m.slow_note:
        text += f"\n\nNo run against the `slow` profile: {m.slow_note}."
    return text


def machine_lines(versions: dict[str, str]) -> list[str]:
    return [
        f"- machine: {_cpu_model()}, {len(os.sched_getaffinity(0))} CPUs, Linux {platform.release()}, "
        f"1-minute load average {os.getloadavg()[0]:.2f} at the end of the run (other work on the machine "
        "slows both sides and widens the spread)",
        f"- Python {platform.python_version()}",
        *(f"- {name} {version}" for name, version in versions.items()),
    ]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def render(m: Measurements) -> str:
    tables = [signin_table(m)]
    if m.slow:
        rounds = len([s for s in m.slow if s.contender == PAM_U2F])
        tables.append(
            signin_table(
                m,
                m.slow,
                f"The same against the software key's `slow` profile (a real key's latencies), {rounds} rounds each, "
                "median (IQR), ms",
            )
        )
    tables.append(after_enter_table(m))
    if m.probes:
        tables.append(split_table(m.probes))
    if m.variants:
        tables.append(variants_table(m))
    tables.append(unlock_table(m))
    if m.imports:
        tables.append(import_table(m))
    if m.rates or m.crypto:
        tables.append(rate_table(m.rates + m.crypto))
    header = [
        f"Run {m.when}: `{m.command}`, user {m.user}, one software key (UDP, in the benchmark's process) for both.",
        "",
        *machine_lines(m.versions),
    ]
    return "\n".join(["# Benchmark results", "", *header, "", headline(m), "", *(t.markdown() for t in tables)])
