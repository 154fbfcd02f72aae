"""Every `hmacunlock` command shown in a code block of README.md and docs/ runs, as written, against the software key.

Each page is a story told in order (enroll before unlock), so its commands run in page order in a fresh sandbox:
a temporary store (`--store` added where the page leaves the default), software keys over UDP for `--device auto`
or `hid:...`, a LUKS2 image for `/dev/sdb2`, a loop-mounted ext4 with encryption for `/home/alice/private`, temp
paths for `/run/...`, `/root/...` and `/etc/pam.d/...`. Secrets go on stdin, one line per prompt, as the input
contract says. Pipes and redirections run in bash, as a reader would type them.

A command is only left out with a reason the test prints (NOT_RUN_HERE): the few that need what a machine may lack
(device-mapper for `--name`; a loop device for the profile). docs/cli.md is generated from the parser
(tests/test_docs.py) and is not a story. If a page gains a command this runner cannot place, the test fails and
says which: the docs cannot drift from the program unnoticed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from libhmacunlock.softkey.udp import running_udp_softkey
from libhmacunlock.targets.luks import device_mapper_available
from tests.cli_run import run
from tests.fixtures.luks import FIRST_PASSPHRASE, make_volume
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.system import require_tool

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMMAND = re.compile(r"^(?:sudo )?hmacunlock\s")
# Pages that tell a story with commands; a page not listed here that shows a command fails test_every_page_is_run.
PAGES = ("README.md", "docs/luks-and-profile.md", "docs/pam.md", "docs/recovery.md")
# What a page assumes was done before its first command (the README's "Using it for real" steps).
PREAMBLE = {
    "README.md": (),
    "docs/luks-and-profile.md": ("set-pin", "enroll alice"),
    "docs/pam.md": (),
    "docs/recovery.md": ("set-pin", "enroll alice", "profile setup", "luks enroll"),
}
# Subcommands (first words after `hmacunlock`) that read the store: the sandbox's store is added to them.
STORE_COMMANDS = (
    "enroll",
    "unlock",
    "list",
    "remove",
    "recovery",
    "luks enroll",
    "luks unlock",
    "luks remove",
    "luks keyscript",
    "profile setup",
    "profile unlock",
    "pam snippet",
)

# Destructive subcommands: at a terminal they ask first; the runner has none, so it says --yes for the reader
# (docs/cli.md, input contract: without a terminal a destructive command needs --yes).
DESTRUCTIVE = ("remove", "recovery remove", "luks remove")


# Commands that talk to the key: where a page leaves --device out (the default `auto`: the USB key), the sandbox's
# software key is named instead.
KEY_COMMANDS = ("key ", "enroll", "unlock", "recovery add", "luks enroll", "luks unlock", "luks keyscript",
                "profile setup", "profile unlock")  # fmt: skip


def doc_commands(page: str) -> list[str]:
    """The command lines of `page`'s code blocks, comments cut off."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", (ROOT / page).read_text(), re.S):
        for line in block.splitlines():
            line = line.strip()
            if COMMAND.match(line):
                found.append(re.sub(r"\s+#\s.*$", "", line).strip())
    return found


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sandbox:
    def __init__(self, tmp: Path, key: str, backup: str, volume: str | None, profile: Path | None) -> None:
        self.tmp, self.key, self.backup, self.volume, self.profile = tmp, key, backup, volume, profile
        self.store = tmp / "store"
        self.port = free_udp_port()
        self.recovery_key = ""
        self.not_run: list[tuple[str, str]] = []
        self.background: list[subprocess.Popen] = []

    # --- what a command means here ----------------------------------------------------------------------------

    def substitute(self, command: str) -> str:
        words = command.split()
        if words[0] == "sudo":
            command = command[len("sudo ") :]
        further = "--existing-device" in command or "--recovery" in command
        # the README's two USB keys: hidraw3 the enrolled one, hidraw4 the backup; `auto` is the enrolled key, or
        # the new one where a further key is enrolled
        command = command.replace("hid:/dev/hidraw3", self.key).replace("hid:/dev/hidraw4", self.backup)
        command = command.replace("--device auto", f"--device {self.backup if further else self.key}")
        command = command.replace("127.0.0.1:4242", f"127.0.0.1:{self.port}")
        command = command.replace("/root/softkey.state", str(self.tmp / "softkey.state"))
        command = command.replace("/root/hmu-store", str(self.store))
        command = command.replace("/etc/pam.d/hmu-try", str(self.tmp / "hmu-try"))
        command = command.replace("/run/alice.key", str(self.tmp / "alice.key"))
        if self.volume:
            command = command.replace("/dev/sdb2", self.volume)
        if self.profile:
            command = command.replace("/home/alice/private", str(self.profile))
        if "CREDENTIAL_ID" in command:
            listed = json.loads(run("list", "--store", str(self.store), "--json").stdout)
            command = command.replace("CREDENTIAL_ID", shlex.quote(listed["users"][0]["keys"][0]["credential_id"]))
        return " | ".join(self._with_store(segment.strip()) for segment in command.split(" | "))

    def _with_store(self, segment: str) -> str:
        words = segment.split()
        rest = " ".join(words[1:])
        if "--device" not in words and "--key-file" not in words and rest.startswith(KEY_COMMANDS):
            head, redirect, tail = segment.partition(" > ")
            segment = f"{head} --device {self.key}" + (f" > {tail}" if redirect else "")
            words = segment.split()
        sub = " ".join(words[1:3])
        if words[0] == "hmacunlock" and "--yes" not in words and (words[1] == "remove" or sub in DESTRUCTIVE):
            head, redirect, tail = segment.partition(" > ")
            segment = f"{head} --yes" + (f" > {tail}" if redirect else "")
            words = segment.split()
        if "--store" in words or not any(sub == c or sub.startswith(c + " ") or words[1] == c for c in STORE_COMMANDS):
            return segment
        head, redirect, tail = segment.partition(" > ")
        return f"{head} --store {self.store}" + (f" > {tail}" if redirect else "")

    def stdin(self, command: str) -> str:
        first = command.split(" | ")[0]
        lines: list[str] = []
        if " key set-pin" in first:
            lines = [TEST_PIN]
        elif " enroll " in first and first.split()[1] == "enroll":
            if "--existing-device" in first:
                lines = [TEST_PIN, TEST_PIN]
            elif "--recovery" in first:
                lines = [self.recovery_key, TEST_PIN]
            else:
                lines = [TEST_PIN]
        elif " recovery add" in first:
            lines = [TEST_PIN]
        elif " recovery unlock" in first:
            lines = [self.recovery_key]
        elif " luks enroll" in first:
            lines = [TEST_PIN, FIRST_PASSPHRASE.decode()]
        elif any(c in first for c in (" luks unlock", " profile setup", " profile unlock")):
            lines = [] if "--key-file -" in first else [TEST_PIN]
        return "".join(line + "\n" for line in lines)

    def why_not(self, command: str) -> str | None:
        """Why `command` cannot run on this machine (NOT_RUN_HERE), or None."""
        if "/home/alice/private" in command and self.profile is None:
            return "the profile needs root and a loop-mounted ext4 with -O encrypt, which this machine lacks"
        if "/dev/sdb2" in command and self.volume is None:
            return "the volume needs cryptsetup, which this machine lacks"
        return None

    # --- running ----------------------------------------------------------------------------------------------

    def run(self, command: str) -> subprocess.CompletedProcess:
        reason = self.why_not(command)
        if reason:
            self.not_run.append((command, reason))
            return subprocess.CompletedProcess(command, 0, "", "")
        line = self.substitute(command)
        if " --name " in line and not device_mapper_available():
            self.not_run.append((command, "opens /dev/mapper/NAME: no device-mapper here; run with --test-passphrase"))
            line = re.sub(r"--name \S+", "--test-passphrase", line)
        if line.endswith("&"):
            return self._start(line.rstrip("& ").strip())
        env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line],
            input=self.stdin(line),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=self.tmp,
        )
        if " recovery add" in line and proc.returncode == 0:
            self.recovery_key = proc.stdout.strip().splitlines()[-1]
        return proc

    def _start(self, line: str) -> subprocess.CompletedProcess:
        argv = shlex.split(line)
        argv[0:1] = [sys.executable, "-m", "hmacunlock_cli"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.background.append(proc)
        ready = proc.stdout.readline() if proc.stdout else ""
        return subprocess.CompletedProcess(line, 0 if "ready" in ready else 1, ready, "")

    def preamble(self, steps: tuple[str, ...]) -> None:
        for step in steps:
            if step == "set-pin":
                for spec in (self.key, self.backup):
                    run("key", "set-pin", "--device", spec, stdin=TEST_PIN + "\n")
            elif step == "enroll alice":
                run("enroll", "alice", "--device", self.key, "--store", str(self.store), stdin=TEST_PIN + "\n")
            elif step == "profile setup" and self.profile is not None:
                run(*(["profile", "setup", "alice"]), str(self.profile), "--device", self.key, "--store",
                    str(self.store), stdin=TEST_PIN + "\n")  # fmt: skip
            elif step == "luks enroll" and self.volume is not None:
                run(*(["luks", "enroll"]), self.volume, "alice", "--device", self.key, "--store", str(self.store),
                    stdin=f"{TEST_PIN}\n{FIRST_PASSPHRASE.decode()}\n")  # fmt: skip

    def close(self) -> None:
        for proc in self.background:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


@contextlib.contextmanager
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    volume = None
    if subprocess.run(["which", "cryptsetup"], capture_output=True).returncode == 0:
        volume = make_volume(tmp_path / "sdb2.img").path
    with contextlib.ExitStack() as stack:
        key = stack.enter_context(running_udp_softkey(tmp_path / "key.json"))
        backup = stack.enter_context(running_udp_softkey(tmp_path / "backup.json"))
        profile = None
        if os.geteuid() == 0 and os.path.exists("/dev/loop-control"):
            from tests.fixtures.fscrypt import loop_ext4

            try:
                mnt = stack.enter_context(loop_ext4(tmp_path))
                profile = mnt / "private"
                profile.mkdir()
            except pytest.skip.Exception:
                profile = None
        box = Sandbox(tmp_path, key.spec, backup.spec, volume, profile)
        try:
            yield box
        finally:
            box.close()


def test_every_page_is_run():
    pages = [p for p in ["README.md", *(f"docs/{f.name}" for f in sorted((ROOT / "docs").glob("*.md")))]]
    showing = {p for p in pages if p != "docs/cli.md" and doc_commands(p)}
    assert showing == set(PAGES), f"pages with commands the runner does not run: {showing - set(PAGES)}"


@pytest.mark.parametrize("page", PAGES)
def test_the_commands_of_a_page_run_as_shown(page, tmp_path):
    require_tool("bash")
    commands = doc_commands(page)
    assert commands, f"{page} shows no command any more: update PAGES"
    failed = []
    with sandbox(tmp_path) as box:
        box.preamble(PREAMBLE[page])
        for command in commands:
            proc = box.run(command)
            assert "Traceback" not in proc.stderr, proc.stderr
            if proc.returncode != 0:
                failed.append(f"{command}\n    exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
        for command, reason in box.not_run:
            print(f"NOT_RUN_HERE {page}: {command}: {reason}")
        assert not failed, f"{page}: commands that fail as documented:\n" + "\n".join(failed)
        AFTER[page](box)  # and they did what the page says


def _alice(box: Sandbox) -> dict:
    return json.loads(run("list", "--store", str(box.store), "--json").stdout)["users"][0]


def _after_readme(box: Sandbox) -> None:
    alice = _alice(box)
    assert len(alice["keys"]) == 2 and len(alice["recovery"]) == 1  # the key, the backup key, the recovery key


def _after_luks_page(box: Sandbox) -> None:
    if box.volume:  # the page ends by removing both tokens again
        from libhmacunlock.targets.luks import Volume

        assert not Volume(box.volume).hmacunlock_tokens() and not Volume(box.volume).systemd_tokens()


def _after_pam_page(box: Sandbox) -> None:
    line = (box.tmp / "hmu-try").read_text()
    assert line.startswith("auth required /") and f"device=udp:127.0.0.1:{box.port}" in line
    assert f"store={box.store}" in line and _alice(box)["keys"]


def _after_recovery_page(box: Sandbox) -> None:
    assert len((box.tmp / "alice.key").read_bytes()) == 32
    alice = _alice(box)  # the first key removed by its credential id; the one enrolled with --recovery is left
    assert len(alice["keys"]) == 1 and len(alice["recovery"]) == 1


AFTER = {
    "README.md": _after_readme,
    "docs/luks-and-profile.md": _after_luks_page,
    "docs/pam.md": _after_pam_page,
    "docs/recovery.md": _after_recovery_page,
}
