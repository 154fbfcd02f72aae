"""The PAM helper with a stopwatch (where a sign-in's time goes inside hmacunlock_pam.helper), and the what-if
helper scripts the benchmark runs through the module's `helper=` option.

The benchmark points the module's `helper=` option at a generated script (see `write_probe_script`) that records
CLOCK_MONOTONIC before anything else, then runs the real helper's `main()` with timers wrapped around its seams:
the PIN prompt, the library's import (after the prompt), every CTAPHID message, the library's key-file (store)
and key-derivation (keys) functions, and the verdict. Nothing in pam_module/ or libhmacunlock/ changes; the timers
are installed after the library's import finished, so the measured import is the real one. Used for the split
rounds only: the headline sign-in times run the unmodified helper.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

_now = functools.partial(time.clock_gettime, time.CLOCK_MONOTONIC)

# (category, module) whose functions and class methods are timed, outermost call per category only
TIMED_MODULES = [
    ("store", "libhmacunlock.store"),
    ("crypto", "libhmacunlock.keys"),
    ("crypto", "libhmacunlock.verify"),
]


class Probe:
    def __init__(self, started: float) -> None:
        self.marks: dict[str, float] = {"exec": started}
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._depth = threading.local()

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, _now())

    def timed(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if getattr(fn, "_bench_timed", False):
            return fn

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, category, 0)
            setattr(self._depth, category, depth + 1)
            start = _now()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self._depth, category, depth)
                if depth == 0:  # nested calls within a category count once
                    self.totals[category] += _now() - start
                    self.counts[category] += 1

        wrapper._bench_timed = True  # type: ignore[attr-defined]
        return wrapper

    def record(self) -> dict[str, Any]:
        return {"marks": self.marks, "totals": dict(self.totals), "counts": dict(self.counts)}


def _time_module(probe: Probe, category: str, module_name: str) -> None:
    """Wrap the module's own functions and methods, and rebind them where libhmacunlock modules imported them."""
    module = sys.modules.get(module_name)
    if module is None:
        return
    replaced: dict[int, Callable[..., Any]] = {}
    for name, value in list(vars(module).items()):
        if name.startswith("__"):
            continue
        if callable(value) and getattr(value, "__module__", None) == module_name and not isinstance(value, type):
            replaced[id(value)] = probe.timed(category, value)
            setattr(module, name, replaced[id(value)])
        elif isinstance(value, type) and value.__module__ == module_name:
            for attr, member in list(vars(value).items()):
                if attr.startswith("__") and attr != "__init__":
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    setattr(value, attr, type(member)(probe.timed(category, member.__func__)))
                elif callable(member) and not isinstance(member, type):
                    setattr(value, attr, probe.timed(category, member))
    for other_name, other in list(sys.modules.items()):  # `from .store import write` copies the reference
        if other is None or not other_name.startswith(("libhmacunlock", "hmacunlock_pam")):
            continue
        for name, value in list(vars(other).items()):
            if id(value) in replaced and value is not replaced[id(value)]:
                setattr(other, name, replaced[id(value)])


def _install_deep_timers(probe: Probe) -> None:
    """After the library is imported: time CTAPHID messages, the store and the key derivations."""
    from fido2.hid import CtapHidDevice

    if getattr(CtapHidDevice.call, "_bench_timed", False):
        return
    CtapHidDevice.call = probe.timed("ctap", CtapHidDevice.call)  # type: ignore[method-assign]
    for category, module_name in TIMED_MODULES:
        _time_module(probe, category, module_name)


def _around(
    owner: Any, name: str, before: str, after: str, probe: Probe, then: Callable[[], None] | None = None
) -> None:
    """Mark `before` and `after` around owner.name (if the helper still has that seam; a missing seam only leaves
    its rows of the split empty)."""
    original = getattr(owner, name, None)
    if original is None:
        return

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        probe.mark(before)
        try:
            return original(*args, **kwargs)
        finally:
            probe.mark(after)
            if then is not None:
                then()

    setattr(owner, name, wrapper)


def run(started: float, out: str) -> int:
    probe = Probe(started)
    probe.mark("python_up")
    import hmacunlock_pam.helper as helper
    from hmacunlock_pam.protocol import Channel, Frame

    probe.mark("helper_imported")
    send, read_secret = Channel.send, Channel.read_secret

    def timed_send(self: Channel, kind: Frame, text: str = "") -> None:
        if kind is Frame.PROMPT_SECRET:
            probe.mark("prompt_sent")
        elif kind is Frame.VERDICT:
            probe.mark("verdict")
            probe.marks["verdict_ok"] = float(text.startswith("success"))
        send(self, kind, text)

    def timed_read_secret(self: Channel) -> str | None:
        secret = read_secret(self)
        probe.mark("pin_received")
        return secret

    deep = functools.partial(_install_deep_timers, probe)
    Channel.send, Channel.read_secret = timed_send, timed_read_secret  # type: ignore[method-assign]
    # the library's import: deep timers go in once it is done, so the import itself is measured as it is
    _around(helper, "load_library", "preload_start", "preload_end", probe, then=deep)
    _around(helper, "_unlock_with_retries", "unlock_start", "unlock_end", probe)
    code = helper.main()
    probe.mark("main_returned")
    with open(out, "a") as f:
        f.write(json.dumps(probe.record()) + "\n")
    return code


def write_probe_script(path: Path, out: Path) -> Path:
    """A root-owned executable the module can run with `helper=PATH` (absolute, no arguments)."""
    repo = Path(__file__).resolve().parent.parent
    path.write_text(
        f"#!{sys.executable} -I\n"
        "import time\n"
        "_T0 = time.clock_gettime(time.CLOCK_MONOTONIC)\n"
        "import sys\n"
        f"sys.path.insert(0, {str(repo)!r})\n"
        "from bench.helper_probe import run\n"
        f"sys.exit(run(_T0, {str(out)!r}))\n"
    )
    path.chmod(0o700)
    return path


def write_exit_variant_script(path: Path, exit_early: bool) -> Path:
    """The unmodified helper through helper=, optionally leaving with os._exit() once main() returned.

    main() returns once the verdict is written, so os._exit only skips the interpreter's
    teardown (module finalisers, GC), which the module otherwise waits for before it believes the verdict.
    """
    tail = "os._exit(main())\n" if exit_early else "sys.exit(main())\n"
    path.write_text(f"#!{sys.executable} -I\nimport os, sys\nfrom hmacunlock_pam.helper import main\n{tail}")
    path.chmod(0o700)
    return path


PROMPT = "Security key PIN: "


def write_prompt_stub(path: Path) -> Path:
    """A helper= stand-in in /bin/sh that sends the PIN prompt at once, then answers auth_err.

    Not a helper: it never signs anyone in. It times the path to the first prompt without Python, i.e. what a
    prompt sent by the native module itself (or by an already-running helper) would cost.
    """
    prompt = PROMPT.encode()
    verdict = b"auth_err"
    path.write_text(
        "#!/bin/sh\n"
        f"printf 'P\\000\\{len(prompt):03o}{PROMPT}'\n"
        "dd bs=1 count=3 of=/dev/null 2>/dev/null\n"  # the answer's header is enough: the stub ignores the PIN
        f"printf 'V\\000\\{len(verdict):03o}{verdict.decode()}'\n"
    )
    path.chmod(0o700)
    return path


def write_lean_variant_script(path: Path, libdir: Path) -> Path:
    """The unmodified helper started lean: `python -I -S` with an explicit sys.path, and os._exit() at the end.

    Without `site`, the venv's site-packages and the editable install's import hook are not set up, so `libdir`
    gets links named as the import names (hmacunlock_pam -> pam_module/, libhmacunlock -> libhmacunlock/), as a
    regular install would lay them out; the build could bake the same path in, as it bakes HELPER_PYTHON.
    """
    import sysconfig

    repo = Path(__file__).resolve().parent.parent
    libdir.mkdir(exist_ok=True)
    for name, target in (("hmacunlock_pam", repo / "pam_module"), ("libhmacunlock", repo / "libhmacunlock")):
        if not (libdir / name).exists():
            (libdir / name).symlink_to(target)
    paths = [str(libdir), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    path.write_text(
        f"#!{sys.executable} -IS\nimport os, sys\nsys.path[:0] = {list(dict.fromkeys(paths))!r}\n"
        "from hmacunlock_pam.helper import main\nos._exit(main())\n"
    )
    path.chmod(0o700)
    return path
