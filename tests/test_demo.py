"""`hmacunlock demo` runs the whole story non-interactively, each step's outcome checked from its JSON log (not its
wording), and leaves nothing behind: no temporary files, PAM service file, mount, loop device or process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HMACUNLOCK = Path(sys.executable).parent / "hmacunlock"
DEMO_TIMEOUT = 180  # seconds; the demo takes well under a minute here
STEPS = ["key", "enroll", "offline", "data", "pam", "profile", "wrong-pin", "usernameless", "recovery"]
ALWAYS = {"key", "enroll", "data", "profile", "wrong-pin", "usernameless", "recovery"}  # run without root too
AS_ROOT = {"offline", "pam"}


def _command() -> list[str]:
    return [str(HMACUNLOCK)] if HMACUNLOCK.exists() else [sys.executable, "-m", "hmacunlock_cli"]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp)  # the demo's temporary directory goes here, so we can see that it is gone
    return env


def _read_log(path: Path) -> tuple[dict[str, dict], dict | None]:
    steps, summary = {}, None
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if "summary" in entry:
            summary = entry
        else:
            steps[entry["step"]] = entry
    return steps, summary


def _leftovers(tmp: Path) -> list[str]:
    """Everything of the demo's that could outlive it, named; empty when it cleaned up."""
    found = [f"file {p}" for p in tmp.iterdir()]
    found += [str(p) for p in Path("/etc/pam.d").glob("hmacunlock-demo*")]
    found += [
        f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(tmp) in line
    ]
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if str(tmp) in backing.read_text():
                found.append(f"loop device {backing.parent.parent.name}")
        except OSError:
            pass
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tmp) in text and "pytest" not in text:
            found.append(f"process {cmdline.parent.name}: {text.strip()}")
    return found


@pytest.fixture
def demo_tmp(tmp_path: Path) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("target", ["auto", "luks"])
def test_demo_runs_every_step_and_leaves_nothing(demo_tmp: Path, tmp_path: Path, target: str):
    """auto is fscrypt as root (CI) and LUKS otherwise; luks runs the LUKS2 volume file story everywhere."""
    log = tmp_path / "demo.jsonl"
    proc = subprocess.run(
        _command() + ["demo", "--target", target, "--json-log", str(log)],
        cwd=ROOT,
        env=_env(demo_tmp),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    steps, summary = _read_log(log)
    transcript = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert list(steps) == STEPS, transcript
    failed = {s: e["reason"] for s, e in steps.items() if e["outcome"] == "failed"}
    assert not failed, transcript
    assert proc.returncode == 0, transcript
    assert summary is not None and summary["ok"] is True
    # The recovery key is printed once by 'recovery add'; the demo keeps it and shows it masked, never whole.
    assert "-****-****" in proc.stdout
    assert not re.search(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){8}\b", proc.stdout + proc.stderr + log.read_text())
    required = set(ALWAYS)
    if os.geteuid() == 0:
        required |= AS_ROOT
    not_ok = {s: steps[s]["reason"] for s in required if steps[s]["outcome"] != "ok"}
    assert not not_ok, transcript
    if steps["offline"]["outcome"] == "ok":
        # Every command after the network went off ran inside the namespace, and the transcript says so.
        after = proc.stdout.split("[4/9]", 1)[1]
        commands = [line.strip() for line in after.splitlines() if line.strip().startswith(("$", "[offline] $"))]
        assert commands
        assert all(c.startswith("[offline] $") for c in commands if not c.startswith("$ kill -TERM")), commands
    assert _leftovers(demo_tmp) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_demo_still_cleans_up(demo_tmp: Path, tmp_path: Path, sig: signal.Signals):
    """Interrupt the demo once its key server, namespace and data exist: it must undo them all."""
    log = tmp_path / "demo.jsonl"
    proc = subprocess.Popen(
        _command() + ["demo", "--json-log", str(log)],
        cwd=ROOT,
        env=_env(demo_tmp),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + DEMO_TIMEOUT
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and '"step": "data"' in log.read_text():
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the demo ended before it could be interrupted"
        assert any(demo_tmp.iterdir()), "the demo had made nothing yet"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert b"cleanup" in out
    assert _leftovers(demo_tmp) == []


def test_interactive_needs_a_terminal(demo_tmp: Path):
    proc = subprocess.run(
        _command() + ["demo", "--interactive"],
        env=_env(demo_tmp),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert not any(demo_tmp.iterdir())
