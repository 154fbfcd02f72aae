"""Run the real `hmacunlock` command from tests: as a subprocess (root), or as another user in a forked child.

The interpreter lives under /root here, which other users cannot read, so "as nobody" cannot exec it: the child
is forked from this process (every module the command needs imported beforehand), drops to the uid for good, and
runs the CLI's own `main()` on pipes, exactly as `python -m hmacunlock_cli` would.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass

NOBODY = 65534


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str, stdin: str = "", ok: bool = True, timeout: float = 60) -> Ran:
    """`hmacunlock ARGS` as a subprocess with `stdin` (one line per prompt); no traceback, ever."""
    proc = subprocess.run(
        [sys.executable, "-m", "hmacunlock_cli", *args], input=stdin.encode(), capture_output=True, timeout=timeout
    )
    ran = Ran(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
    assert "Traceback" not in ran.stderr, ran.stderr
    if ok:
        assert ran.returncode == 0, ran.stderr
    return ran


def _preload() -> None:
    """Everything the commands import lazily: after setuid the child cannot read the interpreter's library."""
    import fido2.hid
    import fido2.hid.linux  # noqa: F401
    import hmacunlock_cli.main as main_module

    import libhmacunlock.audit  # imports syslog (lib-dynload, under /root too) when a command fails
    import libhmacunlock.dependents
    import libhmacunlock.enroll
    import libhmacunlock.records
    import libhmacunlock.recovery
    import libhmacunlock.removal
    import libhmacunlock.store
    import libhmacunlock.udp
    import libhmacunlock.unlock  # noqa: F401

    main_module.build_parser()  # imports every command module


def run_as(uid: int, *args: str, stdin: str = "") -> Ran:
    """`hmacunlock ARGS` run by `uid` (gid the same): a forked child that drops privileges, then calls main()."""
    _preload()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(in_w, stdin.encode())
    os.close(in_w)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            # the child's own standard streams for main(); they live until os._exit below
            sys.stdin = open(0, closefd=False)  # noqa: SIM115 - replaced for the child's whole life
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - as above
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - as above
            from hmacunlock_cli.main import main

            code = main(list(args))
        except BaseException as exc:  # noqa: BLE001 - reported through the exit code and stderr
            os.write(2, f"child failed: {type(exc).__name__}: {exc}".encode())
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):  # a closed pipe: the parent sees what arrived
                    stream.flush()
            os._exit(code)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    ran = Ran(os.waitstatus_to_exitcode(status), stdout.decode(errors="replace"), stderr.decode(errors="replace"))
    assert "Traceback" not in ran.stderr and "child failed" not in ran.stderr, ran.stderr
    return ran
