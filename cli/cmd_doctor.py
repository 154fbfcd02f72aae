"""`hmacunlock doctor [--json]`: checks an installation end to end and says what is wrong in words one can act on.

Each check gives ok, warn (works, but not as well as it could: no warm helper, key unplugged, no service uses the
module yet) or FAIL (a sign-in through the module would fail, or be unsafe). Exit status: 0 when nothing failed
(warnings allowed), 1 when a check failed (docs/install.md, "Checking an installation").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from libhmacunlock.config import Config, Installation, installation, load
from libhmacunlock.errors import HmacUnlockError

from .cmd_pam import MODULE_NAME

PAM_D = Path("/etc/pam.d")
NOBODY = 65534
HELPER_PROBE = "import hmacunlock_pam.helper, libhmacunlock.unlock"  # what a spawned helper imports to sign in


class Check(NamedTuple):
    name: str
    status: str  # "ok", "warn", "FAIL"
    message: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def ok(name: str, message: str) -> Check:
    return Check(name, "ok", message)


def warn(name: str, message: str) -> Check:
    return Check(name, "warn", message)


def fail(name: str, message: str) -> Check:
    return Check(name, "FAIL", message)


# --- the checks, in the order a sign-in needs them ---------------------------------------------------------------


def check_config(path: str | None) -> tuple[Check, Config]:
    try:
        config = load(path, required=path is not None)
    except HmacUnlockError as exc:
        return fail("config", exc.message + " Fix it: every command and sign-in refuses it."), Config()
    if config.path is None:
        return ok("config", "no configuration file: built-in defaults"), config
    return ok("config", f"{config.path} reads cleanly"), config


def check_module(inst: Installation | None) -> Iterator[Check]:
    from .cmd_pam import module_path

    if inst is None:
        try:
            yield ok("module", f"source tree: {module_path()} (named by absolute path, not installed)")
        except HmacUnlockError as exc:
            yield fail("module", exc.message)
        return
    path = Path(inst.pam_module)
    try:
        st = path.lstat()
    except FileNotFoundError:
        yield fail("module", f"{path} is missing: a PAM service naming {MODULE_NAME} fails. Reinstall hmacunlock.")
        return
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        yield fail("module", f"{path} must be a regular file owned by root and writable by root only")
        return
    try:
        import ctypes

        lib = ctypes.CDLL(str(path), mode=os.RTLD_NOW | os.RTLD_LOCAL)
        lib.pam_sm_authenticate  # noqa: B018 - an AttributeError if the entry point is not exported
    except (OSError, AttributeError) as exc:
        yield fail("module", f"{path} does not load as a PAM module: {exc}")
        return
    data = path.read_bytes()
    if inst.helper_python.encode() + b"\0" not in data:
        yield fail("module", f"{path} was not built for this installation: it does not run {inst.helper_python}")
        return
    yield ok("module", f"{MODULE_NAME} found by name ({path}) and loads")


def check_helper(inst: Installation | None) -> Check:
    """The interpreter the module runs, as an unprivileged user: a screen locker's sign-in needs exactly this."""
    python = inst.helper_python if inst else sys.executable
    as_nobody = os.geteuid() == 0
    try:
        run = subprocess.run(
            [python, "-I", "-c", HELPER_PROBE],
            check=False,
            user=NOBODY if as_nobody else None,
            group=NOBODY if as_nobody else None,
            extra_groups=[] if as_nobody else None,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return fail("helper", f"{python} cannot be run by an unprivileged user: {exc}. Screen lockers cannot sign in.")
    who = "user nobody" if as_nobody else "this user (run doctor as root to check as nobody)"
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
        return fail(
            "helper",
            f"the helper's interpreter {python} fails for {who}: {last}. Screen lockers (which run PAM as the "
            f"user) cannot sign in: every user needs to read and run {Path(python).parent.parent}.",
        )
    return ok("helper", f"{python} runs the helper for {who}")


def _peer_uid(conn: socket.socket) -> int:
    return int(struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1])


def check_socket(inst: Installation | None) -> Check:
    if inst is None:
        return ok("warm helper", "source tree: the module tries a warm helper only with socket=")
    path = inst.socket
    systemd = os.path.isdir("/run/systemd/system")
    try:
        st = os.lstat(path)
        dir_st = os.lstat(os.path.dirname(path))
    except FileNotFoundError:
        if systemd:
            return fail(
                "warm helper",
                f"nothing at {path}: sign-ins spawn the helper (slower). Start it: systemctl enable --now "
                "hmacunlock-helper.socket",
            )
        return warn("warm helper", f"nothing at {path} (systemd is not running here): sign-ins spawn the helper")
    for what, s, kind in (("socket", st, stat.S_IFSOCK), ("its directory", dir_st, stat.S_IFDIR)):
        if stat.S_IFMT(s.st_mode) != kind or s.st_uid != 0 or s.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return fail("warm helper", f"{path}: {what} is not root's alone; the module will not use it")
    if os.geteuid() != 0:
        return warn("warm helper", f"{path} is there; run doctor as root to see whether it answers")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    try:
        conn.connect(path)
        uid = _peer_uid(conn)
    except OSError as exc:
        return warn("warm helper", f"{path} does not answer ({exc.strerror or exc}): sign-ins spawn the helper")
    finally:
        conn.close()
    if uid != 0:
        return fail("warm helper", f"{path} is answered by uid {uid}, not root: the module refuses it")
    return ok("warm helper", f"{path} answers (root)")


def check_store(path: str) -> Iterator[Check]:
    from libhmacunlock.store import Store

    store = Store(path)
    try:
        users = store.users()
    except HmacUnlockError as exc:
        yield fail("store", exc.message)
        return
    if not store.path.is_dir():
        yield fail("store", f"{path} does not exist: nobody can be enrolled. Create it: install -d -m 0711 {path}")
        return
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    if mode & 0o001 == 0:
        yield warn("store", f"{path} is mode {mode:04o}: screen lockers (running as the user) cannot reach records")
    bad = 0
    for user in users:
        try:
            store.read(user)
        except HmacUnlockError as exc:
            bad += 1
            yield fail("store", f"record of {user}: {exc.message}")
    if not bad:
        yield ok("store", f"{path}: root's, mode {mode:04o}, {len(users)} record(s) safe and readable")


def check_key(config: Config) -> Check:
    from libhmacunlock.device import open_key

    spec = config.device or "auto"
    try:
        with open_key(spec) as key:
            features = key.features()
    except HmacUnlockError as exc:
        return warn("key", f"device {spec}: {exc.message}")
    if not features.compatible:
        return fail("key", f"device {spec} lacks what hmacunlock needs: {', '.join(features.missing())}")
    return ok("key", f"device {spec}: a compatible key" + ("" if features.pin_set else ", but it has no PIN yet"))


def check_services(inst: Installation | None) -> Iterator[Check]:
    named = []
    try:
        entries = sorted(PAM_D.iterdir())
    except OSError as exc:
        yield warn("pam services", f"cannot read {PAM_D}: {exc.strerror}")
        return
    for entry in entries:
        try:
            lines = entry.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            module = next((w for w in words if w.endswith(MODULE_NAME)), None)
            if module is None:
                continue
            named.append(entry.name)
            if module.startswith("/") and not os.path.isfile(module):
                yield fail("pam services", f"{entry} names {module}, which does not exist")
            elif module.startswith("/") and inst is not None and module != inst.pam_module:
                yield warn("pam services", f"{entry} names {module}, not the installed module (name it by bare name)")
            break
    if named:
        yield ok("pam services", f"naming the module: {', '.join(named)}")
    else:
        yield warn("pam services", "no PAM service names the module yet: sudo pam-auth-update --enable hmacunlock")


def run_checks(config_path: str | None) -> list[Check]:
    inst = installation()
    first, config = check_config(config_path)
    checks = [first, *check_module(inst), check_helper(inst), check_socket(inst)]
    checks += [*check_store(config.store or (inst.store if inst else "/var/lib/hmacunlock")), check_key(config)]
    checks += list(check_services(inst))
    return checks


def _doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config)
    failed = any(c.failed for c in checks)
    if args.json:
        print(json.dumps({"healthy": not failed, "checks": [c._asdict() for c in checks]}, indent=1))
    else:
        for c in checks:
            print(f"{c.status:<4} {c.name}: {c.message}")
        print("healthy" if not failed else "problems found: see the FAIL lines")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check the installation: module, helper, warm helper, store, key, PAM services",
        description="Check an installation end to end: the PAM module found by name and loadable, its helper "
        "runnable by an unprivileged user, the warm helper's socket answering, the store and its records owned "
        "and moded as they must be, the configured key, the PAM services naming the module. Exit status 0 "
        "when nothing failed (warnings allowed), 1 when a check failed. Run it as root to check everything.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_doctor, reads_config=True)
