"""What the demo does to the machine, and how it undoes it.

Everything the demo creates is registered with a Cleanup as soon as it exists, and undone in reverse order on
success, failure, Ctrl-C or SIGTERM. Helper processes (the key server, the namespace holder) get
PR_SET_PDEATHSIG, so even a SIGKILLed demo does not leave them running; the network namespace also holds a
private mount namespace, so the PAM service file and the loop mount inside it vanish with it.

Commands are run as a person would type them and printed as they run; secrets reach them on stdin only.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .demo_steps import StepFailed, Transcript

COMMAND_TIMEOUT = 90.0  # seconds; a stuck command fails its step instead of hanging the demo
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the demo dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Cleanup:
    """A stack of undo actions; each runs even when an earlier one failed, and failures are reported."""

    def __init__(self, transcript: Transcript) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []
        self._t = transcript
        self.failures: list[str] = []

    def push(self, label: str, action: Callable[[], None]) -> None:
        self._actions.append((label, action))

    def run(self) -> None:
        while self._actions:
            label, action = self._actions.pop()
            try:
                action()
                self._t.note(f"cleanup: {label}")
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest; say what was left
                self.failures.append(label)
                self._t.note(f"cleanup FAILED: {label} ({type(exc).__name__}: {exc})")


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    text: str  # what was shown: stdout+stderr, or stderr alone when stdout was kept for the demo
    seconds: float


class Shell:
    """Runs commands, printed as typed. `wrap` puts them inside the offline namespace once there is one."""

    def __init__(self, transcript: Transcript, workdir: Path, interactive: bool) -> None:
        self.t = transcript
        self.workdir = workdir
        self.interactive = interactive
        self.prefix: list[str] = []  # e.g. nsenter --target PID --net --mount --
        self.hmacunlock = _hmacunlock_argv()

    # -- how commands look -------------------------------------------------------------------------------------

    def show(self, argv: Sequence[str]) -> str:
        shown = shlex.join(argv)
        return shown.replace(str(self.workdir), "$DEMO")

    def output(self, text: str) -> None:
        self.t.output(text.replace(str(self.workdir), "$DEMO"))

    def print_command(self, argv: Sequence[str], note: str, background: bool = False) -> None:
        where = "[offline] " if self.prefix else ""
        amp = " &" if background else ""
        self.t.say(f"  {where}$ {self.show(argv)}{amp}{('   # ' + note) if note else ''}")

    def full_argv(self, argv: Sequence[str]) -> list[str]:
        argv = list(argv)
        if argv and argv[0] == "hmacunlock":
            argv = self.hmacunlock + argv[1:]
        elif argv and argv[0] == "python3":
            argv = [sys.executable] + argv[1:]  # the interpreter the demo runs on, shown as python3
        return self.prefix + argv

    # -- running -----------------------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        secrets: Sequence[str] = (),
        secret_note: str = "",
        keep_stdout: bool = False,
        expect: int | None = 0,
        feed: bytes | None = None,
        note: str = "",
        quiet: bool = False,
    ) -> Ran:
        """Run one command. `secrets` are typed on stdin (or by the person with --interactive); `feed` is
        non-secret or binary input (e.g. a key file on '-'). With keep_stdout the command's stdout is returned
        and not shown (JSON, key material). `expect` is the exit code the story needs (None: any)."""
        if secrets and not secret_note:
            secret_note = "PIN typed on stdin" if not self.interactive else "type the PIN"
        self.print_command(argv, "; ".join(x for x in (note, secret_note if secrets else "") if x))
        person_types = self.interactive and bool(secrets)
        stdin_data = feed if feed is not None else ("".join(s + "\n" for s in secrets).encode() if secrets else b"")
        start = time.monotonic()
        try:
            proc = subprocess.run(
                self.full_argv(argv),
                input=None if person_types else stdin_data,
                stdout=subprocess.PIPE,
                stderr=None if person_types else (subprocess.PIPE if keep_stdout else subprocess.STDOUT),
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise StepFailed(f"'{self.show(argv)}' did not finish within {COMMAND_TIMEOUT:.0f} s") from None
        except FileNotFoundError as exc:
            raise StepFailed(f"cannot run {argv[0]!r}: {exc.strerror}") from None
        seconds = time.monotonic() - start
        if keep_stdout:
            text = (proc.stderr or b"").decode(errors="replace")
        else:
            text = (proc.stdout or b"").decode(errors="replace")
        if not quiet:
            self.output(text)
        rc_note = f"exit {proc.returncode}, {seconds:.2f} s"
        self.t.say(f"    ({rc_note})")
        if expect is not None and proc.returncode != expect:
            raise StepFailed(f"'{self.show(argv)}' exited {proc.returncode}, expected {expect}")
        return Ran(proc.returncode, proc.stdout or b"", text, seconds)

    def run_on_terminal(
        self, argv: Sequence[str], script: Sequence[tuple[str, str, str]], expect: int | None = 0
    ) -> Ran:
        """Run a command on a pseudo-terminal and answer its prompts as a person would.

        `script` is (regex the output must show, answer to type, how to show the answer): the answer is typed
        only once the prompt is on screen, since a terminal flushes input typed ahead of a no-echo prompt."""
        self.print_command(argv, "on a terminal; the demo types the answers")
        master, slave = os.openpty()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                self.full_argv(argv),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=_take_terminal,
                close_fds=True,
            )
        finally:
            os.close(slave)
        seen, pending, steps = "", "", list(script)
        deadline = start + COMMAND_TIMEOUT
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    proc.kill()
                    raise StepFailed(f"'{self.show(argv)}' did not finish within {COMMAND_TIMEOUT:.0f} s")
                ready, _, _ = select.select([master], [], [], min(remaining, 0.5))
                if ready:
                    try:
                        chunk = os.read(master, 4096).decode(errors="replace")
                    except OSError:  # EIO: the other side closed
                        chunk = ""
                    if not chunk:
                        break
                    seen += chunk
                    pending += chunk.replace("\r", "")
                    if "\n" in pending:  # show whole lines as they come; a prompt waits for its answer
                        done, pending = pending.rsplit("\n", 1)
                        self.output(done)
                    while steps and re.search(steps[0][0], seen, re.S):
                        _, answer, shown = steps.pop(0)
                        self.output(f"{pending}<the demo types {shown}>")
                        os.write(master, (answer + "\n").encode())
                        seen = pending = ""
                elif proc.poll() is not None:
                    break
        finally:
            os.close(master)
        if pending.strip():
            self.output(pending)
        rc = proc.wait(timeout=10)
        seconds = time.monotonic() - start
        self.t.say(f"    (exit {rc}, {seconds:.2f} s)")
        if steps:
            raise StepFailed(f"'{self.show(argv)}' never showed the prompt {steps[0][0]!r}")
        if expect is not None and rc != expect:
            raise StepFailed(f"'{self.show(argv)}' exited {rc}, expected {expect}")
        return Ran(rc, b"", seen, seconds)


def _take_terminal() -> None:
    """preexec_fn after setsid: make the pty our controlling terminal, so /dev/tty is it (getpass uses that)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    _die_with_parent()


def _hmacunlock_argv() -> list[str]:
    """The `hmacunlock` a person would type: the console script beside this interpreter, else -m."""
    script = Path(sys.executable).parent / "hmacunlock"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "hmacunlock_cli"]


# --- the offline namespace ------------------------------------------------------------------------------------


class OfflineNamespace:
    """A network namespace with only `lo`, plus a private mount namespace, held open by a sleeping process.

    Commands enter it with nsenter. When the holder dies (cleanup, or the demo killed), both namespaces go,
    and with them every mount made inside (the PAM service directory, the loop-mounted filesystem)."""

    def __init__(self, holder: subprocess.Popen) -> None:
        self.holder = holder

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--target={self.holder.pid}", "--net", "--mount", "--"]

    @classmethod
    def start(cls) -> OfflineNamespace:
        own = _ns_ids(os.getpid())
        holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if holder.poll() is not None:
                err = holder.stderr.read().decode(errors="replace").strip() if holder.stderr else ""
                raise OSError(err or f"unshare exited {holder.returncode}")
            try:
                if all(a != b for a, b in zip(_ns_ids(holder.pid), own, strict=True)):
                    return cls(holder)  # unshare has switched namespaces (and exec'd sleep)
            except OSError:
                pass
            time.sleep(0.02)
        holder.kill()
        raise OSError("unshare did not set up the namespace within 10 s")

    def stop(self) -> None:
        stop_process(self.holder)


def _ns_ids(pid: int) -> tuple[str, str]:
    return os.readlink(f"/proc/{pid}/ns/net"), os.readlink(f"/proc/{pid}/ns/mnt")


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


# --- the key server ---------------------------------------------------------------------------------------------

_READY = re.compile(r"udp:([0-9.]+):(\d+)|([0-9.]+):(\d+)")


class KeyServer:
    """`hmacunlock softkey serve` as a subprocess; its ready line names the UDP port."""

    def __init__(self, proc: subprocess.Popen, spec: str, log: Path) -> None:
        self.proc, self.spec, self.log = proc, spec, log

    @classmethod
    def start(cls, shell: Shell, state: Path, log: Path) -> KeyServer:
        argv = ["hmacunlock", "softkey", "serve", "--state", str(state), "--udp", "127.0.0.1:0"]
        shell.print_command(argv, "the software key, in the background", background=True)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                shell.full_argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            first = text.splitlines()[0] if "\n" in text else ""
            match = _READY.search(first)
            if match:
                host, port = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
                shell.output(first)
                return cls(proc, f"udp:{host}:{port}", log)
            if proc.poll() is not None:
                shell.output(text)
                raise StepFailed(f"the key server exited {proc.returncode} before it was ready")
            time.sleep(0.05)
        stop_process(proc)
        raise StepFailed("the key server did not print its ready line within 20 s")

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
