"""`python -m bench.run` (`make bench`): sign-in latency of hmacunlock's PAM module next to pam-u2f, same key.

One run, as root: a software key served over UDP from this process; pam-u2f enrolled with pamu2fcfg and our module
enrolled with `hmacunlock enroll`, both PIN-protected on that key, for the same user; then N rounds alternating
(ABBA) of `pamtester SERVICE USER authenticate` on a pseudo-terminal, the PIN typed when the prompt shows. Then the
helper's time split (separate rounds with the helper under a stopwatch), `hmacunlock unlock` end to end, import
costs, and the key's assertions per second next to the raw crypto. Prints a table and writes bench/results.md.
A third contender is our module with `socket=` and the warm helper (`hmacunlock pam warm-helper`) running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from . import pamu2f
from .helper_probe import write_exit_variant_script, write_lean_variant_script, write_probe_script, write_prompt_stub
from .keyside import Message, RunningKey, running_key
from .micro import Rate, crypto_rates
from .ptyrun import PtyRunError, run_on_pty
from .report import OURS, PAM_U2F, WARM, Contender, Measurements, SignIn, render
from .shim import Shim, build_shim
from .stats import Summary

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = Path(__file__).resolve().parent / "results.md"
RESULTS_JSON = Path(__file__).resolve().parent / "results.json"
PAM_D = Path("/etc/pam.d")
HMACUNLOCK = [sys.executable, "-m", "hmacunlock_cli"]
BENCH_PIN = "246810"  # the throw-away software key's PIN in this run: not a secret anyone uses
TYPED_DELAY = 0.6  # seconds: six digits at a brisk 100 ms each


class BenchUnavailable(Exception):
    """Something the benchmark needs is not here (root, a Debian tool, the built module)."""


# ---------------------------------------------------------------------------------------------------------------
# set-up


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise BenchUnavailable("needs root: it writes PAM service files to /etc/pam.d")
    for tool in ("pamtester", "gcc", "make"):
        if shutil.which(tool) is None:
            raise BenchUnavailable(f"needs {tool} (run 'make deps' as root)")
    try:
        pamu2f.require_pam_u2f()
    except pamu2f.PamU2fMissing as exc:
        raise BenchUnavailable(str(exc)) from None
    if not (REPO / "pam_module" / "pam_hmacunlock.so").is_file():
        raise BenchUnavailable("pam_module/pam_hmacunlock.so is not built (make pam)")


def cli(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*HMACUNLOCK, *args], input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"hmacunlock {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


class Services:
    """PAM service files in /etc/pam.d, each removed when the run ends (they are global state)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, label: str, line: str) -> str:
        name = f"hmacunlock-bench-{label}-{os.getpid()}"
        (PAM_D / name).write_text(
            f"# written by hmacunlock's benchmark (bench/run.py); removed when it ends\n"
            f"{line}\naccount required pam_permit.so\n"
        )
        self.names.append(name)
        return name

    def remove_all(self) -> None:
        for name in self.names:
            (PAM_D / name).unlink(missing_ok=True)


def our_line(key: RunningKey, store: Path, **extra: str) -> str:
    from hmacunlock_cli.cmd_pam import snippet

    return " ".join([snippet("required", device=key.spec, store=str(store)), *(f"{k}={v}" for k, v in extra.items())])


def contenders_for(key: RunningKey, services: Services, u2f: pamu2f.PamU2fSetup, store: Path, warm: Path, tag: str):
    """pam-u2f, our default (the module with socket=, the warm helper) and our spawned fallback, on `key`."""
    return [
        Contender(PAM_U2F, services.add(f"u2f{tag}", u2f.service_line), u2f.env),
        Contender(WARM, services.add(f"warm{tag}", our_line(key, store, socket=str(warm))), dict(os.environ)),
        Contender(OURS, services.add(f"ours{tag}", our_line(key, store)), dict(os.environ)),
    ]


def slow_key_rounds(
    args: argparse.Namespace, shim: Shim, workdir: Path, key_dir: Path, services: Services, warm: Path
) -> tuple[list[SignIn], list[SignIn], str]:
    """The three contenders against a second software key with the `slow` profile (a real key's latencies):
    enrolled anew on it, one warm-up each, then `--slow-rounds` alternating with the PIN typed at once, and as many
    with it typed in TYPED_DELAY. ([], [], why) when it cannot run."""
    if args.slow_rounds <= 0:
        return [], [], "--slow-rounds 0"
    try:
        from libhmacunlock.softkey.profiles import get as get_profile

        profile = get_profile("slow")
    except Exception as exc:  # noqa: BLE001 - an older softkey without profiles: say so in the results
        return [], [], f"the software key has no `slow` profile here ({type(exc).__name__})"
    slow_dir = workdir / "slow"
    slow_dir.mkdir()
    with running_key(key_dir / "softkey-slow.state", profile=profile) as key:
        key.set_pin(BENCH_PIN)
        u2f = pamu2f.enroll(shim, key.address, args.user, BENCH_PIN, slow_dir)
        store = slow_dir / "store"
        cli("enroll", args.user, "--device", key.spec, "--store", str(store), stdin=BENCH_PIN + "\n", timeout=120)
        contenders = contenders_for(key, services, u2f, store, warm, "-slow")
        alternate(contenders, 1, args.user, key, 0.0)
        at_once = alternate(contenders, args.slow_rounds, args.user, key, args.typing_delay)
        return at_once, alternate(contenders, args.slow_rounds, args.user, key, TYPED_DELAY), ""


@contextmanager
def warm_helper(workdir: Path) -> Iterator[Path]:
    """`hmacunlock pam warm-helper` for the run, on a socket of its own; yields the socket's path (for socket=)."""
    sock = workdir / "warm" / "helper.sock"  # the daemon creates the directory 0700
    log = workdir / "warm-helper.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*HMACUNLOCK, "pam", "warm-helper", "--socket", str(sock)], stdout=subprocess.DEVNULL, stderr=err, cwd=REPO
        )
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the warm helper did not start: {log.read_text().strip()[-400:]}")
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    served = log.read_text().count("serving a sign-in in child")
    if served == 0:
        raise RuntimeError("the warm helper served no sign-in: the warm rows would be the spawned helper's")


# ---------------------------------------------------------------------------------------------------------------
# measurements


def sign_in(c: Contender, user: str, key: RunningKey, typing_delay: float) -> SignIn:
    key.monitor.take()
    counted = key.counted()
    run = run_on_pty(
        ["pamtester", c.service, user, "authenticate"], [BENCH_PIN], env=c.env, timeout=60, typing_delay=typing_delay
    )
    if run.returncode != 0 or "successfully authenticated" not in run.text():
        raise PtyRunError(f"{c.name} sign-in failed (exit {run.returncode}): {run.text().strip()[-400:]}")
    messages = key.monitor.take()
    if len(messages) != key.counted() - counted:  # the wrapper and the key's own counter must agree
        raise RuntimeError(f"{c.name}: {len(messages)} messages timed but the key counted {key.counted() - counted}")
    return SignIn(c.name, run.total, run.first_output, run.after_last_answer, messages, run.started)


def alternate(
    contenders: Sequence[Contender], rounds: int, user: str, key: RunningKey, typing_delay: float = 0.0
) -> list[SignIn]:
    """ABBA order, so that neither side always runs right after the other (page cache, CPU frequency)."""
    results = []
    for i in range(rounds):
        for c in contenders if i % 2 == 0 else list(reversed(contenders)):
            results.append(sign_in(c, user, key, typing_delay))
    return results


def probe_rounds(key: RunningKey, services: Services, store: Path, user: str, workdir: Path, rounds: int) -> list[dict]:
    """Our sign-in with the helper under a stopwatch (helper=PROBE): where the helper's time goes."""
    out = workdir / "helper-timings.jsonl"
    service = services.add("probe", our_line(key, store, helper=str(write_probe_script(workdir / "probe", out))))
    records = []
    for _ in range(rounds):
        key.monitor.take()
        start = time.clock_gettime(time.CLOCK_MONOTONIC)
        run = run_on_pty(["pamtester", service, user, "authenticate"], [BENCH_PIN], timeout=60)
        end = time.clock_gettime(time.CLOCK_MONOTONIC)
        if run.returncode != 0:
            raise PtyRunError(f"probed sign-in failed: {run.text().strip()[-400:]}")
        record = json.loads(out.read_text().splitlines()[-1])
        record.update(
            pamtester_start=start,
            pamtester_end=end,
            pin_typed=start + run.answered[0],
            first_output=start + (run.first_output or 0.0),
            messages=[asdict(m) for m in key.monitor.take()],
        )
        records.append(record)
    return records


def helper_variants(
    key: RunningKey, services: Services, store: Path, user: str, workdir: Path, rounds: int
) -> list[SignIn]:
    """What-if, all running the unmodified helper's main() through helper=: as is; leaving with os._exit() right
    after the verdict; and started lean (python -I -S, explicit sys.path) with os._exit()."""
    scripts = {
        "helper= as is": write_exit_variant_script(workdir / "variant-as-is", exit_early=False),
        "helper= + os._exit after the verdict": write_exit_variant_script(workdir / "variant-exit", exit_early=True),
        "helper= with python -I -S + os._exit": write_lean_variant_script(
            workdir / "variant-lean", workdir / "lean-lib"
        ),
    }
    contenders = [
        Contender(label, services.add(f"variant{i}", our_line(key, store, helper=str(script))), dict(os.environ))
        for i, (label, script) in enumerate(scripts.items())
    ]
    return alternate(contenders, rounds, user, key)


def prompt_floor(
    key: RunningKey, services: Services, store: Path, user: str, workdir: Path, rounds: int
) -> list[float]:
    """Time to first prompt through our module when no Python runs before it (a /bin/sh stand-in helper)."""
    service = services.add("stub", our_line(key, store, helper=str(write_prompt_stub(workdir / "prompt-stub"))))
    times = []
    for _ in range(rounds):
        run = run_on_pty(["pamtester", service, user, "authenticate"], [BENCH_PIN], timeout=30)
        if run.first_output is None or "PIN" not in run.text():
            raise PtyRunError(f"the prompt stand-in showed no prompt: {run.text().strip()[-300:]}")
        times.append(run.first_output)
    return times


def unlock_rounds(key: RunningKey, store: Path, user: str, rounds: int) -> tuple[list[float], list[list[Message]]]:
    times, messages = [], []
    for _ in range(rounds):
        key.monitor.take()
        start = time.perf_counter()
        cli("unlock", user, "--device", key.spec, "--store", str(store), stdin=BENCH_PIN + "\n")
        times.append(time.perf_counter() - start)
        messages.append(key.monitor.take())
    return times, messages


def warm_unlock_rounds(key: RunningKey, store: Path, user: str, rounds: int) -> list[float]:
    """The library's unlock() in this already-warm process: the floor a pre-started (warm) helper could reach."""
    from libhmacunlock.interaction import ScriptedInteraction
    from libhmacunlock.unlock import unlock

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        unlock(str(store), key.spec, ScriptedInteraction([BENCH_PIN]), user=user)
        times.append(time.perf_counter() - start)
    key.monitor.take()
    return times


IMPORT_CASES = {
    "python -I -c pass (bare interpreter, with site)": ["-I", "-c", "pass"],
    "python -I -S -c pass (bare interpreter, no site)": ["-I", "-S", "-c", "pass"],
    "import hmacunlock_pam.helper (what runs before the PIN prompt)": ["-I", "-c", "import hmacunlock_pam.helper"],
    "import libhmacunlock.unlock (the library)": ["-I", "-c", "import libhmacunlock.unlock"],
    "the same, then os._exit(0) (no interpreter teardown)": [
        "-I",
        "-c",
        "import libhmacunlock.unlock, os; os._exit(0)",
    ],
}


def import_costs(rounds: int) -> dict[str, Summary | None]:
    """Wall time of a fresh `python ARGS`, the cost a new helper process pays."""
    out = {}
    for label, args in IMPORT_CASES.items():
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, cwd="/")
            samples.append(time.perf_counter() - start)
        out[label] = Summary.of(samples)
    return out


def top_imports(module: str, count: int = 8) -> list[tuple[str, float]]:
    """The heaviest imports by cumulative time (python -X importtime) at the top two levels."""
    proc = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        if (len(name) - len(name.lstrip())) // 2 <= 1:
            rows.append((name.strip(), int(parts[1]) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:count]


def key_rates(key: RunningKey, pin: str) -> list[Rate]:
    from libhmacunlock.softkey.device import SoftKeyDevice
    from libhmacunlock.udp import open_udp_device, parse_udp_spec

    from .throughput import assertion_rate

    rates = []
    for with_pin, what in [
        (False, "getAssertion + hmac-secret (up=false, no PIN)"),
        (True, "PIN sign-in at the key (keyAgreement + PIN token + getAssertion/hmac-secret)"),
    ]:
        rates.append(assertion_rate(f"{what}, in-process", SoftKeyDevice(key.authenticator), pin, with_pin=with_pin))
        remote = open_udp_device(*parse_udp_spec(key.spec))
        try:
            rates.append(assertion_rate(f"{what}, over UDP", remote, pin, with_pin=with_pin))
        finally:
            remote.close()
    key.monitor.take()
    return rates


def versions() -> dict[str, str]:
    from importlib.metadata import version

    def deb(pkg: str) -> str:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        return p.stdout.strip() or "?"

    return {
        "hmacunlock": version("hmacunlock"),
        "python-fido2": version("fido2"),
        "cryptography": version("cryptography"),
        "libpam-u2f": deb("libpam-u2f"),
        "libfido2-1": deb("libfido2-1"),
        "pamtester": deb("pamtester"),
    }


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="sign-ins per contender (default 20)")
    p.add_argument(
        "--extra-rounds",
        type=int,
        default=None,
        help="rounds for each of the secondary measurements: typed PIN, probe, what-if (default min(N, 10))",
    )
    p.add_argument("--user", default="root", help="the account both modules sign in (must exist for pam-u2f)")
    p.add_argument("--typing-delay", type=float, default=0.0, help="headline rounds: seconds from prompt to PIN")
    p.add_argument(
        "--key-dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where the software key keeps its state (default /dev/shm: the key's own fsyncs are noise)",
    )
    p.add_argument(
        "--slow-rounds",
        type=int,
        default=3,
        help="sign-ins per contender against the software key's `slow` profile (default 3; 0: none)",
    )
    p.add_argument("--quick", action="store_true", help="only the headline rounds, the split and `hmacunlock unlock`")
    p.add_argument("--output", type=Path, default=RESULTS_MD, help="where to write the Markdown results")
    p.add_argument("--json", type=Path, default=RESULTS_JSON, help="where to write the raw samples")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_prerequisites()
    except BenchUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    # The key answers from threads of this process: a short GIL switch interval keeps the pty reader's timestamps
    # from waiting up to 5 ms (the default) behind a key thread.
    sys.setswitchinterval(0.0005)
    shim = build_shim()
    workdir = Path(tempfile.mkdtemp(prefix="hmacunlock-bench-"))
    key_dir = Path(tempfile.mkdtemp(prefix="hmacunlock-bench-key-", dir=args.key_dir))
    services = Services()
    try:
        m = measure(args, shim, workdir, key_dir, services)
    finally:
        services.remove_all()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(key_dir, ignore_errors=True)
    text = render(m)
    print(text)
    args.output.write_text(text)
    args.json.write_text(json.dumps(m.raw(), indent=1))
    return 0


def measure(args: argparse.Namespace, shim: Shim, workdir: Path, key_dir: Path, services: Services) -> Measurements:
    step: Callable[[str], None] = lambda text: print(f"bench: {text}", file=sys.stderr, flush=True)  # noqa: E731
    n, extra = args.rounds, args.extra_rounds if args.extra_rounds is not None else min(args.rounds, 10)
    store = workdir / "store"
    m = Measurements(
        rounds=n,
        user=args.user,
        typing_delay=args.typing_delay,
        typed_delay=TYPED_DELAY,
        command=" ".join(["python -m bench.run", *sys.argv[1:]]),
        versions=versions(),
    )
    with running_key(key_dir / "softkey.state") as key, warm_helper(workdir) as warm_socket:
        step(f"software key at {key.spec}; setting its PIN and enrolling {args.user} with both modules")
        key.set_pin(BENCH_PIN)
        u2f = pamu2f.enroll(shim, key.address, args.user, BENCH_PIN, workdir)
        cli("enroll", args.user, "--device", key.spec, "--store", str(store), stdin=BENCH_PIN + "\n")
        contenders = contenders_for(key, services, u2f, store, warm_socket, "")
        step("warm-up: one sign-in each (not counted)")
        alternate(contenders, 1, args.user, key, args.typing_delay)
        step(f"{n} sign-ins each, alternating")
        m.signins = alternate(contenders, n, args.user, key, args.typing_delay)
        step(f"{extra} probed sign-ins for the helper's time split")
        m.probes = probe_rounds(key, services, store, args.user, workdir, extra)
        step(f"{n} x hmacunlock unlock, {n} x unlock() in this warm process")
        m.unlock_times, m.unlock_messages = unlock_rounds(key, store, args.user, n)
        m.warm_unlock = warm_unlock_rounds(key, store, args.user, n)
        if not args.quick:
            step(f"{extra} sign-ins each with the PIN typed in {TYPED_DELAY} s")
            m.typed = alternate(contenders, extra, args.user, key, TYPED_DELAY)
            step(f"{extra} sign-ins each for the what-if helper variants")
            m.variants = helper_variants(key, services, store, args.user, workdir, extra)
            m.prompt_floor = prompt_floor(key, services, store, args.user, workdir, extra)
            step("the key's throughput")
            m.rates = key_rates(key, BENCH_PIN)
        if not args.quick:
            step(f"2 x {args.slow_rounds} sign-ins each against the software key's `slow` profile (at once, typed)")
            m.slow, m.slow_typed, m.slow_note = slow_key_rounds(args, shim, workdir, key_dir, services, warm_socket)
    if not args.quick:
        step("import costs and raw crypto")
        m.imports = import_costs(max(5, min(n, 10)))
        m.heavy_imports = top_imports("libhmacunlock.unlock")
        m.crypto = crypto_rates()
    return m


if __name__ == "__main__":
    sys.exit(main())
