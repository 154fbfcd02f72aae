"""pam-u2f (Debian libpam-u2f + pamu2fcfg) against the software key, through the preload shim."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .ptyrun import PtyRunError, run_on_pty
from .shim import Shim

ORIGIN = "pam://hmacunlock-bench"
MODULE = "pam_u2f.so"
MODULE_PATHS = (
    "/lib/x86_64-linux-gnu/security/pam_u2f.so",
    "/usr/lib/x86_64-linux-gnu/security/pam_u2f.so",
    "/lib/security/pam_u2f.so",
    "/usr/lib/security/pam_u2f.so",
)


class PamU2fMissing(Exception):
    pass


def require_pam_u2f() -> None:
    if shutil.which("pamu2fcfg") is None:
        raise PamU2fMissing("pamu2fcfg is not installed (Debian package pamu2fcfg)")
    if not any(os.path.exists(p) for p in MODULE_PATHS):
        raise PamU2fMissing("pam_u2f.so is not installed (Debian package libpam-u2f)")


@dataclass(frozen=True)
class PamU2fSetup:
    authfile: Path
    service_line: str
    env: dict[str, str]  # for pamtester: the shim and the key's address


def enroll(shim: Shim, address: str, user: str, pin: str, workdir: Path) -> PamU2fSetup:
    """Register a PIN-protected credential with pamu2fcfg (it reads the PIN from /dev/tty: a pty answers it)."""
    env = shim.environment(address)
    argv = ["pamu2fcfg", "-u", user, "-o", ORIGIN, "-i", ORIGIN, "-N"]
    run = run_on_pty(argv, [pin], env=env, timeout=60)
    line = next((ln for ln in run.text().splitlines() if ln.startswith(user + ":")), None)
    if run.returncode != 0 or line is None:
        raise PtyRunError(f"pamu2fcfg failed (exit {run.returncode}): {run.text().strip()[-400:]}")
    authfile = workdir / "u2f_keys"
    fd = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(line.strip() + "\n")
    service = f"auth required {MODULE} authfile={authfile} cue pinverification=1 origin={ORIGIN} appid={ORIGIN}"
    return PamU2fSetup(authfile, service, env)
