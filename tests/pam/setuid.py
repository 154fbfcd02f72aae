"""A setuid-root su-like PAM client (tests/pam/suclient.c) and a uniquely named unprivileged user to run it as.

Both are global state: the user gets a unique name and is removed, the binary lives in a private temporary
directory (0755, for that user) that is removed, also when the test fails. Root only; callers skip otherwise.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "suclient.c"


@dataclass
class SuClient:
    path: Path
    user: str
    uid: int
    gid: int

    def run(self, service: str, target: str, stdin: str = "", silent: bool = False) -> subprocess.CompletedProcess:
        """The client as the unprivileged user (real uid theirs, effective uid 0 through the setuid bit)."""
        argv = [str(self.path), service, target, *(["silent"] if silent else [])]
        return subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin"},
        )

    def argv(self, service: str, target: str, silent: bool = False) -> list[str]:
        return [str(self.path), service, target, *(["silent"] if silent else [])]


@contextmanager
def setuid_su_client() -> Iterator[SuClient]:
    if os.geteuid() != 0:
        pytest.skip("needs root (a setuid client and a test user)")
    for tool in ("gcc", "useradd", "userdel"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if not Path("/usr/include/security/pam_misc.h").is_file():
        pytest.skip("needs libpam0g-dev (pam_misc.h) to build the su-like client")
    user = f"hmu-su-{uuid.uuid4().hex[:8]}"
    directory = Path(tempfile.mkdtemp(prefix="hmu-suclient-"))
    created = False
    try:
        os.chmod(directory, 0o755)
        binary = directory / "suclient"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(SOURCE), "-lpam", "-lpam_misc"], check=True)
        os.chown(binary, 0, 0)
        os.chmod(binary, 0o4755)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True,
            capture_output=True,
        )
        created = True
        entry = pwd.getpwnam(user)
        yield SuClient(binary, user, entry.pw_uid, entry.pw_gid)
    finally:
        if created:
            subprocess.run(["userdel", user], check=False, capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
