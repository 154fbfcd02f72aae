"""Build and use the LD_PRELOAD shim that lets libfido2 (pam-u2f, pamu2fcfg) reach the software key over UDP."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent / "shim"
ENV_ADDR = "HMACUNLOCK_BENCH_UDP"  # read by fido_udp_preload.c


class ShimBuildFailed(Exception):
    pass


@dataclass(frozen=True)
class Shim:
    path: Path

    def environment(self, address: str) -> dict[str, str]:
        """Environment for a libfido2 program: preload the shim and name the key ("127.0.0.1:PORT")."""
        env = dict(os.environ)
        env["LD_PRELOAD"] = str(self.path)
        env[ENV_ADDR] = address.removeprefix("udp:")
        return env


def build_shim() -> Shim:
    proc = subprocess.run(["make", "-s", "-C", str(SHIM_DIR)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ShimBuildFailed(f"building the preload shim failed:\n{proc.stdout}{proc.stderr}")
    return Shim(SHIM_DIR / "build" / "fido_udp_preload.so")
