"""The airplane-mode story, step by step, driving the real `hmacunlock` command, PAM and kernel.

Each step method runs commands through Shell (printed as typed, secrets on stdin), checks their outcome by exit
code or JSON (never by wording), and raises StepSkipped / StepFailed with the reason. Whatever a step creates it
registers with Cleanup first.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from libhmacunlock.errors import ExitCode
from libhmacunlock.store import Store

from .demo_steps import Step, StepFailed, StepSkipped, Transcript
from .demo_system import Cleanup, KeyServer, OfflineNamespace, Shell, which

PAM_SERVICE_PREFIX = "hmacunlock-demo"
FEATURES = ("resident_key", "client_pin", "hmac_secret", "multiple_accounts_per_rp")
SECRET_NOTE = b"alice's notes: the plane lands at 18:05; the safe code is in the other bag.\n"


class Target:
    FSCRYPT = "fscrypt"
    LUKS = "luks"


@dataclass
class Story:
    shell: Shell
    cleanup: Cleanup
    workdir: Path
    pin: str = field(default_factory=lambda: f"{secrets.randbelow(10**6):06d}")
    wrong_pin: str = ""
    key: KeyServer | None = None
    recovery_key: str = ""
    offline: OfflineNamespace | None = None
    target: str = ""
    target_path: Path | None = None
    pam_service_written: bool = False
    want_target: str = "auto"  # Target.FSCRYPT, Target.LUKS, or auto: fscrypt when it can run here
    signed_in_profile: bool = False

    def __post_init__(self) -> None:
        self.wrong_pin = f"{(int(self.pin) + 1) % 10**6:06d}"
        self.store = self.workdir / "store"
        self.state = self.workdir / "softkey.state"
        # Unique, so that a demo run without a namespace never meets another one's file in /etc/pam.d.
        self.pam_service = f"{PAM_SERVICE_PREFIX}-{self.workdir.name.rsplit('-', 1)[-1]}"

    @property
    def t(self) -> Transcript:
        return self.shell.t

    @property
    def spec(self) -> str:
        if self.key is None:
            raise StepFailed("no key server is running")
        return self.key.spec

    def steps(self) -> list[Step]:
        return [
            Step("key", "A new security key: the built-in software key, its PIN, and the four features", self.new_key),
            Step(
                "enroll",
                "alice and bob enrolled on the same key; a recovery key for alice",
                self.enroll,
                needs=("key",),
            ),
            Step(
                "offline",
                "Network off: the rest runs in a network namespace with only loopback",
                self.go_offline,
                needs=("key",),
            ),
            Step("data", "alice's encrypted data, tied to her key", self.set_up_data, needs=("enroll",)),
            Step("pam", "alice signs in through the real PAM stack (pamtester)", self.pam_sign_in, needs=("enroll",)),
            Step("profile", "alice's encrypted data opens with her key and PIN", self.open_data, needs=("data",)),
            Step("wrong-pin", "A wrong PIN: refused, with the attempts left", self.wrong_pin_step, needs=("enroll",)),
            Step(
                "usernameless",
                "Usernameless sign-in: the key says who; alice or bob?",
                self.usernameless,
                needs=("enroll",),
            ),
            Step(
                "recovery", "The key is lost: alice's recovery key opens the same data", self.recover, needs=("data",)
            ),
        ]

    # --- 1. the key -----------------------------------------------------------------------------------------

    def new_key(self) -> None:
        self.t.note("A software FIDO2 key (CTAP 2.1) in this machine's memory, its state in a temporary file,")
        self.t.note("served over CTAPHID/UDP on 127.0.0.1 -- the transport a USB key uses, minus the USB.")
        self.start_key()
        self.shell.run(
            ["hmacunlock", "key", "set-pin", "--device", self.spec],
            secrets=[self.pin],
            secret_note="new PIN typed on stdin" if not self.shell.interactive else "choose a PIN",
        )
        info = self.key_info()
        for name in FEATURES:
            self.t.note(f"  {name:<26} {'yes' if info['features'].get(name) else 'NO'}")
        self.t.note(
            f"  {'PIN set':<26} {'yes' if info.get('pin_set') else 'no'}    PIN attempts left {info.get('pin_retries')}"
        )
        missing = [n for n in FEATURES if not info["features"].get(n)]
        if missing or not info.get("compatible") or not info.get("pin_set"):
            raise StepFailed(f"key info: not compatible (missing: {', '.join(missing) or 'PIN'})")

    def start_key(self) -> None:
        self.key = KeyServer.start(self.shell, self.state, self.workdir / "softkey.log")
        server = self.key
        self.cleanup.push(f"stopped the key server (pid {server.proc.pid})", server.stop)

    def key_info(self) -> dict:
        ran = self.shell.run(["hmacunlock", "key", "info", "--device", self.spec, "--json"], keep_stdout=True)
        try:
            info = json.loads(ran.stdout)
        except ValueError:
            raise StepFailed("'key info --json' did not print JSON") from None
        if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
            raise StepFailed("'key info --json' has no 'features' object")
        return info

    # --- 2. enrollment --------------------------------------------------------------------------------------

    def enroll(self) -> None:
        os.makedirs(self.store, mode=0o700, exist_ok=True)
        for user in ("alice", "bob"):
            self.shell.run(
                ["hmacunlock", "enroll", user, "--device", self.spec, "--store", str(self.store)], secrets=[self.pin]
            )
        self.shell.run(["hmacunlock", "list", "--store", str(self.store)])
        ran = self.shell.run(["hmacunlock", "list", "--store", str(self.store), "--json"], keep_stdout=True)
        listed = json.dumps(json.loads(ran.stdout or b"null"))
        if "alice" not in listed or "bob" not in listed:
            raise StepFailed("'list --json' does not show both alice and bob")
        self.t.note("(checked: the JSON lists alice and bob, each with a credential under the same RP id)")
        self.shell.run(["ls", "-l", str(self.store)])
        self.t.note("What the machine keeps for alice: a salt, her credential's public key, and her unlock key")
        self.t.note("wrapped under the key's HMAC of that salt -- nothing to guess at offline:")
        self.shell.run(["python3", "-m", "json.tool", str(self.store / "alice.json")])
        ran = self.shell.run(
            ["hmacunlock", "recovery", "add", "alice", "--device", self.spec, "--store", str(self.store)],
            secrets=[self.pin],
            keep_stdout=True,
        )
        lines = ran.stdout.decode(errors="replace").strip().splitlines()
        if not lines or not lines[-1].strip():
            raise StepFailed("'recovery add' printed no recovery key")
        self.recovery_key = lines[-1].strip()
        for line in lines[:-1]:
            self.shell.output(line)
        self.shell.output(_mask(self.recovery_key))
        self.t.note("(the recovery key is printed once, for paper; the demo masks it here and keeps it for the end)")

    # --- 3. network off -------------------------------------------------------------------------------------

    def go_offline(self) -> None:
        if os.geteuid() != 0:
            raise StepSkipped("a network namespace needs root; run 'sudo make demo' to see this step")
        if not which("unshare") or not which("nsenter") or not which("ip"):
            raise StepSkipped("needs unshare, nsenter (util-linux) and ip (iproute2)")
        self.t.say("  $ unshare --net --mount --propagation private -- sleep infinity &   # holds the namespaces")
        try:
            self.offline = OfflineNamespace.start()
        except OSError as exc:
            raise StepSkipped(f"cannot create a network namespace here ({exc})") from None
        ns = self.offline
        self.cleanup.push(f"left the offline namespace (pid {ns.holder.pid})", ns.stop)
        self.shell.prefix = ns.prefix
        self.t.note("Its own interfaces (only lo), routes and sockets: the host's network does not exist in there.")
        self.t.note(
            "Every command below runs inside it: "
            + " ".join(ns.prefix[:-1]).replace(str(ns.holder.pid), "$NS")
            + " -- ..."
        )
        try:
            self._check_offline()
        except StepFailed:
            self.shell.prefix = []  # the story goes on, on the host, with the key where it was
            raise
        self.t.note("The key moves to the offline machine: stop its server and start it again inside.")
        if self.key is not None:
            self.shell.t.say(f"  $ kill -TERM {self.key.proc.pid}   # unplug the key")
            self.key.stop()
        self.start_key()
        info = self.key_info()
        if not info.get("pin_set"):
            raise StepFailed("the key lost its PIN across the restart")
        self.t.note("(its state file kept the PIN, the PIN counter and the credentials: the steps below use them)")

    def _check_offline(self) -> None:
        self.shell.run(["ip", "link", "set", "lo", "up"], note="the UDP key needs loopback")
        ran = self.shell.run(["ip", "-br", "link"])
        names = [line.split()[0] for line in ran.text.splitlines() if line.strip()]
        if names != ["lo"]:
            raise StepFailed(f"expected only 'lo' in the namespace, found {names}")
        if self.shell.run(["ip", "route", "get", "1.1.1.1"], expect=None, note="no route out").returncode == 0:
            raise StepFailed("the namespace has a route out")

    # --- 4. alice's data ------------------------------------------------------------------------------------

    def set_up_data(self) -> None:
        reason = self._fscrypt_unavailable() if self.want_target != Target.LUKS else "--target luks"
        if reason and self.want_target == Target.FSCRYPT:
            raise StepSkipped(f"--target fscrypt, but {reason}")
        if reason:
            self.t.note(f"Target: a LUKS2 volume in a file, checked with --test-passphrase ({reason}).")
            self._set_up_luks()
        else:
            self.t.note("Target: an fscrypt-encrypted directory on a loop-mounted ext4 made with -O encrypt.")
            self._set_up_fscrypt()

    def _fscrypt_unavailable(self) -> str:
        if os.geteuid() != 0:
            return "fscrypt on a loop-mounted ext4 needs root"
        if not os.path.exists("/dev/loop-control"):
            return "no loop devices on this machine"
        if not which("mkfs.ext4") or not which("mount"):
            return "mkfs.ext4 (e2fsprogs) or mount is missing"
        return ""

    def _set_up_fscrypt(self) -> None:
        image, mnt = self.workdir / "home.img", self.workdir / "mnt"
        with open(image, "wb") as f:
            f.truncate(64 * 1024 * 1024)
        mnt.mkdir()
        self.shell.run(["mkfs.ext4", "-q", "-F", "-O", "encrypt", str(image)])
        # Registered first: an interrupt between the mount and the registration must not leave the mount behind.
        self.cleanup.push("unmounted the demo filesystem (its loop device detaches itself)", lambda: self._unmount(mnt))
        self.shell.run(
            ["mount", "-o", "loop", str(image), str(mnt)],
            note="private to the demo's mount namespace" if self.offline else "",
        )
        self.shell.run(["losetup", "-j", str(image)])
        home = mnt / "alice"
        home.mkdir() if not self.offline else self.shell.run(["mkdir", str(home)], quiet=True)
        self.target, self.target_path = Target.FSCRYPT, home
        self.shell.run(
            ["hmacunlock", "profile", "setup", "alice", str(home), "--device", self.spec, "--store", str(self.store)],
            secrets=[self.pin],
        )
        self.shell.run(["tee", str(home / "notes.txt")], feed=SECRET_NOTE, quiet=True, note="alice writes a file")
        self.shell.run(["hmacunlock", "profile", "lock", str(home)])
        ran = self.shell.run(["ls", str(home)])
        if "notes.txt" in ran.text:
            raise StepFailed("the file name is still readable after 'profile lock'")

    def _unmount(self, mnt: Path) -> None:
        if self.offline is not None and self.offline.holder.poll() is not None:
            return  # the namespace is gone, and the mount with it
        self.shell.run(["umount", str(mnt)], quiet=True, expect=None)

    def _set_up_luks(self) -> None:
        if not which("cryptsetup"):
            raise StepSkipped("needs cryptsetup (Debian cryptsetup-bin)")
        volume = self.workdir / "alice.luks"
        with open(volume, "wb") as f:
            f.truncate(32 * 1024 * 1024)
        first = secrets.token_urlsafe(24)
        self.shell.run(
            [
                "cryptsetup",
                "luksFormat",
                "--type",
                "luks2",
                "--batch-mode",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                str(volume),
            ],
            secrets=[first],
            secret_note="its first passphrase on stdin (a fast PBKDF: the demo's volume is a throwaway)",
        )
        self.target, self.target_path = Target.LUKS, volume
        self.shell.run(
            ["hmacunlock", "luks", "enroll", str(volume), "alice", "--device", self.spec, "--store", str(self.store)],
            secrets=[self.pin, first],
            secret_note="PIN, then the volume's existing passphrase, on stdin",
        )
        dump = self.shell.run(
            ["cryptsetup", "luksDump", str(volume)], keep_stdout=True, quiet=True, note="its keyslots and tokens"
        )
        self.shell.output(_keyslots_and_tokens(dump.stdout.decode(errors="replace")))

    # --- 5. sign-in and the data opening --------------------------------------------------------------------

    def pam_sign_in(self) -> None:
        if os.geteuid() != 0:
            raise StepSkipped("a PAM service file lives in /etc/pam.d, which needs root")
        if not which("pamtester"):
            raise StepSkipped("needs pamtester (Debian pamtester)")
        path = self.shell.run(["hmacunlock", "pam", "path"], expect=None)
        if path.returncode != 0:
            raise StepSkipped("the PAM module is not built; 'make pam' builds it")
        line = self.shell.run(
            ["hmacunlock", "pam", "snippet", "--required", "--device", self.spec, "--store", str(self.store)]
        ).text.strip()
        # One try, so that the wrong-PIN step ends at its one wrong PIN; with fscrypt, sign-in opens the profile.
        line += " max_tries=1"
        if self.target == Target.FSCRYPT:
            line += f" profile={self.target_path}"
        self._write_pam_service(line)
        before = self._slot_state("alice")
        self.shell.run(["pamtester", "-v", self.pam_service, "alice", "authenticate"], secrets=[self.pin])
        self.signed_in_profile = self.target == Target.FSCRYPT
        Store(self.store).settled("alice")  # the helper writes the rotated record after its verdict
        after = self._slot_state("alice")
        if before and after:
            self.t.note(
                f"alice's record: salt {before[0][:8]}... -> {after[0][:8]}..., sign count {before[1]} -> {after[1]}"
            )
            if before[0] == after[0]:
                raise StepFailed("the salt in alice's record did not rotate at sign-in")
            self.t.note("(salt rotation: the HMAC output of this sign-in opens nothing next time)")

    def _slot_state(self, user: str) -> tuple[str, int] | None:
        """(salt, sign count) of the user's first slot, read from the record as anyone may; None if not found."""
        try:
            slot = json.loads((self.store / f"{user}.json").read_text())["slots"][0]
            return str(slot["salt"]), int(slot["sign_count"])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None

    def _write_pam_service(self, line: str) -> None:
        text = f"# hmacunlock demo: the module named by its absolute path\n{line}\naccount required pam_permit.so\n"
        if self.offline is not None:
            pamd = self.workdir / "pam.d"
            pamd.mkdir(exist_ok=True)
            (pamd / self.pam_service).write_text(text)
            self.shell.run(
                ["mount", "--bind", str(pamd), "/etc/pam.d"],
                note="in the namespace only: the host's /etc/pam.d is untouched",
            )
        else:
            path = Path("/etc/pam.d") / self.pam_service
            if path.exists():
                raise StepFailed(f"{path} already exists; the demo will not overwrite it")
            self.cleanup.push(f"removed {path}", lambda: path.unlink(missing_ok=True))
            path.write_text(text)
            self.t.note(f"(no namespace: the service file goes to the host's {path}, removed at the end)")
        self.pam_service_written = True
        self.shell.run(["cat", f"/etc/pam.d/{self.pam_service}"])

    def open_data(self) -> None:
        if self.target == Target.FSCRYPT:
            if self.signed_in_profile:
                self.t.note("The PAM sign-in above (profile=) added alice's fscrypt key: her file reads.")
            else:
                self.shell.run(
                    [
                        "hmacunlock",
                        "profile",
                        "unlock",
                        "alice",
                        str(self.target_path),
                        "--device",
                        self.spec,
                        "--store",
                        str(self.store),
                    ],
                    secrets=[self.pin],
                )
            self.shell.run(["hmacunlock", "profile", "status", str(self.target_path)])
            self._check_note()
        else:
            self.shell.run(
                [
                    "hmacunlock",
                    "luks",
                    "unlock",
                    str(self.target_path),
                    "alice",
                    "--device",
                    self.spec,
                    "--store",
                    str(self.store),
                    "--test-passphrase",
                ],
                secrets=[self.pin],
            )

    def _prepared_target(self) -> Path:
        if self.target_path is None:
            raise StepFailed("no disk or profile was prepared (the step that makes one did not run)")
        return self.target_path

    def _check_note(self) -> None:
        ran = self.shell.run(["cat", str(self._prepared_target() / "notes.txt")], keep_stdout=True)
        self.shell.output(ran.stdout.decode(errors="replace"))
        if ran.stdout != SECRET_NOTE:
            raise StepFailed("alice's file did not read back as written")

    # --- 6. a wrong PIN, usernameless -----------------------------------------------------------------------

    def wrong_pin_step(self) -> None:
        before = self.key_info().get("pin_retries")
        if self.pam_service_written:
            ran = self.shell.run(
                ["pamtester", "-v", self.pam_service, "alice", "authenticate"],
                secrets=[self.wrong_pin],
                expect=None,
                secret_note="a wrong PIN typed on stdin" if not self.shell.interactive else "type a WRONG PIN",
            )
            if ran.returncode == 0:
                raise StepFailed("PAM accepted a wrong PIN")
        else:
            self.shell.run(
                ["hmacunlock", "unlock", "alice", "--device", self.spec, "--store", str(self.store)],
                secrets=[self.wrong_pin],
                expect=ExitCode.WRONG_PIN,
                secret_note="a wrong PIN typed on stdin" if not self.shell.interactive else "type a WRONG PIN",
            )
        after = self.key_info().get("pin_retries")
        self.t.note(f"PIN attempts left on the key: {before} before, {after} after")
        if not isinstance(before, int) or after != before - 1:
            raise StepFailed(f"expected the key's PIN retries to drop by one, got {before} -> {after}")

    def usernameless(self) -> None:
        argv = ["hmacunlock", "unlock", "--device", self.spec, "--store", str(self.store)]
        if self.shell.interactive:
            self.t.note("No user named: type the PIN, then pick alice or bob.")
            self.shell.run(argv, secrets=[self.pin], secret_note="type the PIN, then choose")
        else:
            self.shell.run_on_terminal(
                argv,
                [
                    (r"(?i)pin[^\n]*:\s*$", self.pin, "the PIN (not echoed)"),
                    (r"(?s)(?:alice.*bob|bob.*alice).*\n[^\n]*\S[ \t]*$", "bob", "'bob'"),
                ],
            )
        retries = self.key_info().get("pin_retries")
        self.t.note(f"PIN attempts left after a right PIN: {retries} (the count resets)")

    # --- 7. recovery ----------------------------------------------------------------------------------------

    def recover(self) -> None:
        if self.key is not None:
            self.t.note("The key is lost: its server stops, and the key cannot open anything.")
            self.t.say(f"  $ kill -TERM {self.key.proc.pid}")
            self.key.stop()
        lost = self.shell.run(
            ["hmacunlock", "unlock", "alice", "--device", self.spec, "--store", str(self.store)],
            secrets=[self.pin],
            expect=None,
        )
        if lost.returncode != ExitCode.NO_KEY:
            raise StepFailed(f"with the key gone, 'unlock' exited {lost.returncode}, expected {int(ExitCode.NO_KEY)}")
        if self.target == Target.FSCRYPT:
            target = self._prepared_target()
            self.shell.run(["hmacunlock", "profile", "lock", str(target)])
            ran = self.shell.run(["ls", str(target)])
            if "notes.txt" in ran.text:
                raise StepFailed("the file name is readable after 'profile lock'")
        ran = self.shell.run(
            ["hmacunlock", "recovery", "unlock", "alice", "--store", str(self.store), "--key-file", "-"],
            feed=(self.recovery_key + "\n").encode(),
            keep_stdout=True,
            note="the demo pastes the recovery key on stdin; the unlock key comes out on stdout",
        )
        unlock_key = ran.stdout
        if len(unlock_key) != 32:
            raise StepFailed(f"'recovery unlock --key-file -' gave {len(unlock_key)} bytes, not 32")
        self.t.note("(32 bytes of unlock key, kept in the demo's memory and passed on stdin)")
        if self.target == Target.FSCRYPT:
            self.shell.run(
                [
                    "hmacunlock",
                    "profile",
                    "unlock",
                    "alice",
                    str(self.target_path),
                    "--store",
                    str(self.store),
                    "--key-file",
                    "-",
                ],
                feed=unlock_key,
                note="unlock key on stdin",
            )
            self._check_note()
        else:
            self.shell.run(
                [
                    "hmacunlock",
                    "luks",
                    "unlock",
                    str(self.target_path),
                    "alice",
                    "--store",
                    str(self.store),
                    "--key-file",
                    "-",
                    "--test-passphrase",
                ],
                feed=unlock_key,
                note="unlock key on stdin",
            )


def _keyslots_and_tokens(luks_dump: str) -> str:
    """The part of `cryptsetup luksDump` that shows what enrollment did: the keyslots, and the tokens in full."""
    keep, section = [], ""
    for line in luks_dump.splitlines():
        if line and not line[0].isspace():
            section = line.split(":")[0]
            if section in ("Keyslots", "Tokens"):
                keep.append(line)
        elif section == "Tokens" or (section == "Keyslots" and re.match(r"^  \d+: ", line)):
            keep.append(line.replace("\t", "    "))
    return "\n".join(keep)


def _mask(recovery_key: str) -> str:
    groups = recovery_key.split("-")
    if len(groups) > 1:
        return "-".join([groups[0]] + ["*" * len(g) for g in groups[1:]])
    return recovery_key[:4] + "*" * max(0, len(recovery_key) - 4)


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path)
