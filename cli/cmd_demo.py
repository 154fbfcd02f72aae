"""`hmacunlock demo`: the airplane-mode story on the built-in software key (docs/index.md tells it in prose).

The demo drives the real `hmacunlock` command, pamtester, cryptsetup and the kernel as subprocesses, printing each
command as it runs; PINs reach them on stdin, never argv or the environment. It leaves nothing behind: see
demo_system.Cleanup.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from libhmacunlock.errors import ExitCode

from .demo_steps import Transcript, run_steps, summarise
from .demo_story import Story, remove_workdir
from .demo_system import Cleanup, Shell


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the airplane-mode demo on the built-in software key",
        description="Tell the story on the built-in software key: a new key and its PIN, two users enrolled, the "
        "network off, a sign-in through PAM that opens an encrypted profile, a wrong PIN, a "
        "usernameless sign-in, and the recovery key. Cleans up after itself.",
    )
    p.add_argument(
        "--interactive",
        action="store_true",
        help="type the PINs yourself (default: the demo types them on the commands' stdin)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's temporary directory (key state, store, volume) for inspection; "
        "processes, mounts and namespaces are still removed",
    )
    p.add_argument(
        "--target",
        choices=("auto", "fscrypt", "luks"),
        default="auto",
        help="alice's encrypted data: an fscrypt directory on a loop-mounted ext4 (needs root and loop "
        "devices), a LUKS2 volume file, or auto: fscrypt when it can run here (default)",
    )
    p.add_argument(
        "--json-log",
        metavar="FILE",
        type=Path,
        help='also write to FILE one JSON line per step ({"schema": 1, "step": ID, "outcome": ..., "seconds": ..., '
        '"reason": ...}) and a last line {"schema": 1, "summary": {ID: OUTCOME, ...}, "ok": true|false}',
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with open(args.json_log, "w") if args.json_log else contextlib.nullcontext() as log:
        return _run(args, Transcript(log=log))


def _run(args: argparse.Namespace, transcript: Transcript) -> int:
    interactive = bool(args.interactive)
    if interactive and not sys.stdin.isatty():
        transcript.say("hmacunlock demo: --interactive needs a terminal on stdin.")
        return int(ExitCode.USAGE)
    workdir = Path(tempfile.mkdtemp(prefix="hmacunlock-demo-"))
    cleanup = Cleanup(transcript)
    if not args.keep:
        cleanup.push(f"removed {workdir}", lambda: remove_workdir(workdir))
    previous = _terminate_as_interrupt()
    start = time.monotonic()
    transcript.say("hmacunlock demo: sign in and unlock offline with a FIDO2 key and its PIN.")
    transcript.say(
        f"DEMO={workdir}   (the demo's temporary directory; {'kept' if args.keep else 'removed'} at the end)"
    )
    transcript.say(
        "PINs are "
        + (
            "typed by you."
            if interactive
            else "typed by the demo on each command's stdin, never in argv or the environment."
        )
    )
    shell = Shell(transcript, workdir, interactive)
    story = Story(shell, cleanup, workdir, want_target=args.target)
    try:
        results = run_steps(story.steps(), transcript)
    finally:
        transcript.say()
        transcript.say("Cleaning up")
        cleanup.run()
        signal.signal(signal.SIGTERM, previous)
    ok = summarise(results, transcript) and not cleanup.failures
    if args.keep:
        transcript.say(
            f"Kept {workdir} (--keep): the key's state, the store, the volume image. Remove it with: rm -rf {workdir}"
        )
    transcript.say(
        f"{'All steps that ran succeeded' if ok else 'Some steps FAILED'} ({time.monotonic() - start:.1f} s in all)."
    )
    return int(ExitCode.OK if ok else ExitCode.FAILURE)


def _terminate_as_interrupt() -> Callable[[int, FrameType | None], Any] | int | None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the cleanup runs."""

    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    return previous
