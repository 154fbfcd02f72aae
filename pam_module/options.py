"""The PAM module's options, as one table: the man page pam_hmacunlock(8), the shell completion and `doctor` are
generated from it, and tests/test_install_layout.py checks that pam_hmacunlock.c parses exactly these names and that
docs/pam.md documents each one.

`config` says whether /etc/hmacunlock/hmacunlock.conf may set the option's default: only options the helper reads
(they travel in the request) can have one; the module's own (timeout, socket, the first_pass family, nouserok,
debug, helper) are read by the C module, which never opens a file in the PAM host, so they live on the PAM line.
"""

from __future__ import annotations

from typing import NamedTuple


class PamOption(NamedTuple):
    name: str
    value: str | None  # the value's metavar; None for a flag
    help: str
    config: bool = False  # the config file may set its default


OPTIONS: tuple[PamOption, ...] = (
    PamOption("store", "DIR", "the store directory (default /var/lib/hmacunlock)", config=True),
    PamOption(
        "device", "SPEC", "which key: auto (default), hid:/dev/hidrawN, udp:HOST:PORT (the software key)", config=True
    ),
    PamOption("rp_id", "ID", "use only the user's keys enrolled under this relying party id", config=True),
    PamOption("max_tries", "N", "PIN attempts in one sign-in, 1..10 (default 2)", config=True),
    PamOption("cue", None, "show a message before the key needs a touch", config=True),
    PamOption("cue_prompt", "TEXT", "the touch message in your words (write [cue_prompt=Touch it] for spaces)", True),
    PamOption(
        "pin_floor", "N", "0..8 (default 3): with N PIN attempts left or fewer the key is not asked for the PIN; 0: off"
    ),
    PamOption(
        "touch_first",
        "auto|always|never",
        "ask for a touch before the PIN (auto, the default: remote or cross-user sign-ins; bare touch_first: always)",
    ),
    PamOption("nouserok", None, "a user with no record gets PAM_IGNORE, without being asked for a PIN"),
    PamOption("timeout", "SECONDS", "how long the module waits for the helper at each step, 1..3600 (default 60)"),
    PamOption("try_first_pass", None, "use an earlier module's password (PAM_AUTHTOK) as the first PIN attempt"),
    PamOption("use_first_pass", None, "use the earlier password as the PIN and never ask; fail if there is none"),
    PamOption(
        "profile",
        "DIR|record",
        "after the sign-in, unlock the user's fscrypt profile: DIR (%u: the user), or the record's (bare profile)",
    ),
    PamOption(
        "lock_on_logout",
        None,
        "session line: count the user's sessions; at the last close_session lock the profiles their sign-ins unlocked",
    ),
    PamOption("debug", None, "log the steps to syslog (auth facility); never a PIN or a key"),
    PamOption(
        "socket",
        "/ABS/PATH",
        "first try the warm helper listening there (installed default: /run/hmacunlock/helper.sock); "
        "with no daemon the helper is spawned",
    ),
    PamOption("nosocket", None, "never try a warm helper: always spawn the helper"),
    PamOption("helper", "/ABS/PATH", "run this program (root's, not group/other-writable) instead of the helper"),
)

NAMES = tuple(o.name for o in OPTIONS)
