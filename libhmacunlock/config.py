"""/etc/hmacunlock/hmacunlock.conf: the defaults the CLI, the PAM helper and the warm helper's children use.

One `key = value` per line; `#` starts a comment line; blank lines are ignored. Every setting is optional and
an explicit option (a command-line flag, a PAM-line option) wins over it. Only an installed hmacunlock (`make
install`, the Debian package) reads the system file by default: the install writes `_hmacunlock_install.py` into
its environment naming it. A source tree or a plain `pip install` reads none unless `--config FILE` names one, so no
test suite is affected by whether /etc/hmacunlock exists.

Standard library only, and libhmacunlock.errors only on an error: the PAM helper reads this before its first prompt.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from typing import NamedTuple

DEVICE_PREFIXES = ("auto", "hid:", "udp:")
CLONE_POLICIES = ("refuse", "warn")
MAX_TRIES_LIMIT = 10
MAX_SIZE = 64 * 1024


class Config(NamedTuple):
    """The settings a file gave (None: not set there); `path` is the file read, or None."""

    device: str | None = None
    store: str | None = None
    rp_id: str | None = None
    clone_policy: str | None = None
    max_tries: int | None = None
    cue: bool | None = None
    cue_prompt: str | None = None
    path: str | None = None


class Setting(NamedTuple):
    key: str
    value: str  # what the value looks like, for the error message and the template
    help: str
    parse: Callable[[str], object]


def _device(value: str) -> str:
    if value != "auto" and not value.startswith(DEVICE_PREFIXES[1:]):
        raise ValueError("a device spec is auto, hid:/dev/hidrawN or udp:HOST:PORT")
    return value


def _absolute(value: str) -> str:
    if not os.path.isabs(value):
        raise ValueError("must be an absolute path")
    return value


def _word(value: str) -> str:
    if any(c.isspace() for c in value):
        raise ValueError("must not contain white space")
    return value


def _clone_policy(value: str) -> str:
    if value not in CLONE_POLICIES:
        raise ValueError("must be refuse or warn")
    return value


def _tries(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_TRIES_LIMIT:
        raise ValueError(f"must be a number from 1 to {MAX_TRIES_LIMIT}")
    return int(value)


def _yes_no(value: str) -> bool:
    if value not in ("yes", "no"):
        raise ValueError("must be yes or no")
    return value == "yes"


def _text(value: str) -> str:
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("device", "auto", "which key: auto, hid:/dev/hidrawN, udp:HOST:PORT (PAM device=, --device)", _device),
    Setting("store", "/var/lib/hmacunlock", "the store directory (PAM store=, --store)", _absolute),
    Setting(
        "rp_id", "hmacunlock.HOSTNAME", "relying party id to enroll under and unlock with (rp_id=, --rp-id)", _word
    ),
    Setting(
        "clone_policy",
        "refuse",
        "a key whose signature counter goes backwards: refuse or warn (--warn-cloned)",
        _clone_policy,
    ),
    Setting("max_tries", "2", "PIN attempts in one PAM sign-in, 1..10 (PAM max_tries=)", _tries),
    Setting("cue", "no", "show the touch cue in PAM sign-ins: yes or no (PAM cue)", _yes_no),
    Setting("cue_prompt", "Touch your security key", "the touch cue's words (PAM cue_prompt=)", _text),
)
KEYS = {s.key: s for s in SETTINGS}


class Installation(NamedTuple):
    """Where `make install` put this hmacunlock's parts (its `_hmacunlock_install.py`, docs/install.md)."""

    config_file: str
    pam_module: str
    helper_python: str
    socket: str
    store: str
    unit_dir: str
    pam_config: str


@functools.cache
def installation() -> Installation | None:
    """This installation's layout, or None when running from a source tree or a plain `pip install` (looked up
    once per process: a warm helper asks at every sign-in, and a failed import is not cached by Python)."""
    try:
        import _hmacunlock_install as found  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Installation(*(str(getattr(found, name.upper())) for name in Installation._fields))


def default_path() -> str | None:
    """The system file an installed hmacunlock reads, or None (a source tree reads none)."""
    installed = installation()
    return installed.config_file if installed else None


def _error(path: str, line: int | None, message: str) -> Exception:
    from .errors import ConfigError

    return ConfigError(path, line, message)


def load(path: str | None = None, required: bool = False) -> Config:
    """The settings in PATH (default: the installed system file; none for a source tree).

    A missing file is an empty Config unless `required` (a file the person named). A file that is not root's (or
    the caller's), or that group or others can write, is refused: it chooses the store a root sign-in trusts.
    """
    if path is None:
        path = default_path()
        if path is None:
            return Config()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if required:
            raise _error(path, None, "no such file") from None
        return Config()
    except OSError as exc:
        raise _error(path, None, exc.strerror or type(exc).__name__) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _error(path, None, "not a regular file")
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise _error(path, None, "must be owned by root and writable by its owner only")
        data = os.read(fd, MAX_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        raise _error(path, None, f"larger than {MAX_SIZE} bytes")
    return parse(data, path)


def parse(data: bytes, path: str) -> Config:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _error(path, None, "not UTF-8 text") from None
    values: dict[str, object] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key:
            raise _error(path, number, f"expected 'key = value', got {line[:80]!r}")
        setting = KEYS.get(key)
        if setting is None:
            raise _error(path, number, f"unknown setting {key!r} (known: {', '.join(KEYS)})")
        if key in values:
            raise _error(path, number, f"{key} is set twice")
        if not value:
            raise _error(path, number, f"{key} has no value")
        try:
            values[key] = setting.parse(value)
        except ValueError as exc:
            raise _error(path, number, f"{key} = {value[:80]!r}: {exc}") from None
    return Config(path=path, **values)  # type: ignore[arg-type]


def template() -> str:
    """The file the package installs: every setting, commented out, at its built-in default."""
    lines = [
        "# hmacunlock's defaults for the hmacunlock command, the PAM helper and the warm helper.",
        "# An explicit option (command line, PAM line) wins over a setting here. One 'key = value' per line.",
        "# The PAM module's own options (timeout, socket, nosocket, nouserok, try_first_pass, use_first_pass, debug,",
        "# helper, profile) belong on the PAM line. 'hmacunlock doctor' checks this file. See hmacunlock(8).",
        "",
    ]
    for s in SETTINGS:
        lines += [f"# {s.help}", f"#{s.key} = {s.value}", ""]
    return "\n".join(lines)
