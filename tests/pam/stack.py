"""Driving real libpam in tests: a throw-away service file in /etc/pam.d, pamtester, python-pam in-process.

A service file is global state, so each gets a unique name and is removed when the test ends. Everything here needs
root (/etc/pam.d is root's); callers skip with the reason otherwise.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.system import require_root, require_tool

REPO = Path(__file__).resolve().parents[2]
# What `make pam` builds beside the hmacunlock_pam package, and `hmacunlock pam path` names.
SOURCE_TREE_MODULE = REPO / "pam_module" / "pam_hmacunlock.so"
# The module the tests load: built from the current source out of the tree, once per test run, so a test never
# runs a stale build and never writes into the source tree.
_BUILD_DIR = Path(tempfile.mkdtemp(prefix="hmu-test-pam-"))
atexit.register(shutil.rmtree, _BUILD_DIR, ignore_errors=True)
MODULE = _BUILD_DIR / "pam_hmacunlock.so"
FAKE_HELPER = Path(__file__).resolve().parent / "fake_helper.py"
PAM_D = Path("/etc/pam.d")

# A stack line for nouserok that lets PAM_IGNORE (and only it) fall through to the next module.
NOUSEROK_CONTROL = "[success=done ignore=ignore default=die]"


def build_module(module: Path, **variables: str) -> Path:
    """pam_module/Makefile's build, written to `module` (its directory must exist); HELPER_PYTHON is this
    interpreter, which has hmacunlock installed."""
    assignments = [f"{k}={v}" for k, v in {"HELPER_PYTHON": sys.executable, **variables}.items()]
    subprocess.run(
        ["make", "-s", "-C", str(REPO / "pam_module"), f"MODULE={module}", *assignments],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return module


def require_module() -> Path:
    """The module built from the current source (out of the tree); skips when it cannot be built here."""
    if not MODULE.is_file() and shutil.which("gcc") and Path("/usr/include/security/pam_modules.h").is_file():
        build_module(MODULE)
    if not MODULE.is_file():
        pytest.skip("needs gcc and libpam0g-dev to build the PAM module (make deps as root)")
    return MODULE


def require_source_tree_module() -> Path:
    """The module `make pam` (run by `make venv`) built in the source tree; skips when it is not there."""
    if not SOURCE_TREE_MODULE.is_file():
        pytest.skip("needs pam_module/pam_hmacunlock.so: run 'make pam' (needs gcc and libpam0g-dev)")
    return SOURCE_TREE_MODULE


def require_pam() -> Path:
    require_root()
    require_tool("pamtester")
    return require_module()


def module_line(control: str = "required", *flags: str, **options: object) -> str:
    words = ["auth", control, str(MODULE), *flags, *(f"{k}={v}" for k, v in options.items())]
    return " ".join(words)


@contextmanager
def pam_service(*lines: str) -> Iterator[str]:
    """Writes /etc/pam.d/hmu-test-XXXX with these lines (and a permissive account phase); yields its name."""
    name = f"hmu-test-{uuid.uuid4().hex[:10]}"
    path = PAM_D / name
    text = (
        "# written by hmacunlock's tests; removed when the test ends\n"
        + "\n".join(lines)
        + "\naccount required pam_permit.so\n"
    )
    path.write_text(text)
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


def fake_helper(directory: Path, behaviour: str) -> Path:
    """A helper= program (the module passes it no arguments) that runs tests/pam/fake_helper.py BEHAVIOUR.

    It execs in place with the environment it was given (as exec'd, before Python's locale coercion adds
    LC_CTYPE), so the fake sees exactly the environment and descriptors the module gave it.
    """
    path = directory / behaviour
    path.write_text(
        f"#!{sys.executable} -I\nimport os, sys\n"
        "env = dict(v.split(b'=', 1) for v in open('/proc/self/environ', 'rb').read().split(b'\\0') if v)\n"
        f"os.execve(sys.executable, [sys.executable, '-I', {str(FAKE_HELPER)!r}, {behaviour!r}, "
        f"{str(path)!r}], env)\n"
    )
    path.chmod(0o755)
    return path


@dataclass
class Outcome:
    ok: bool
    output: str  # everything the conversation showed, prompts included
    returncode: int | None = None  # pamtester's
    code: int | None = None  # python-pam's PAM result


def pamtester(service: str, user: str, stdin: str = "", timeout: float = 60) -> Outcome:
    """pamtester reads each echo-off prompt's answer as a line of its stdin when stdin is not a terminal."""
    run = subprocess.run(
        ["pamtester", service, user, "authenticate"], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    return Outcome(run.returncode == 0, run.stdout + run.stderr, returncode=run.returncode)


def pamtester_waiting(service: str, user: str) -> subprocess.Popen:
    """pamtester held at its first prompt: its stdin is a pipe not written to yet (tests/fixtures/terminal.py
    read_until waits for the prompt; communicate(PIN + "\n") answers it), its stderr goes with its stdout."""
    return subprocess.Popen(
        ["pamtester", service, user, "authenticate"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def python_pam(service: str, user: str, pin: str) -> Outcome:
    """python-pam in this very process: it answers every echo-off prompt with `pin`."""
    import pam

    p = pam.pam()
    ok = p.authenticate(user, pin, service=service)  # auth, then account and setcred
    return Outcome(bool(ok), "\n".join(p.messages), code=p.code)


def inheritable_fd() -> int:
    """A descriptor the PAM host leaves open across exec, to prove the module does not pass it on."""
    fd = os.open("/etc/hostname" if os.path.exists("/etc/hostname") else "/dev/null", os.O_RDONLY)
    os.set_inheritable(fd, True)
    return fd


def record_settled(store: Path, user: str) -> None:
    """Wait until no sign-in is writing USER's record (it is written after the verdict, under the user's lock)."""
    from libhmacunlock.store import Store

    Store(store).settled(user)
