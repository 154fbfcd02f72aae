"""Stand-in helpers for pam_hmacunlock.so's failure tests: each behaviour breaks (or keeps) the protocol one way.

Run as `fake_helper.py BEHAVIOUR HELPER_PATH` by the small `helper=` program that tests/pam/stack.py writes.
Self-contained on purpose (standard library only, nothing from the project): it is the other side of the
protocol, written from PROTOCOL.md, so a bug shared with hmacunlock_pam.protocol cannot hide here.
"""

import os
import signal
import sys
import time


def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            sys.exit(5)
        buf += chunk
    return buf


def read_frame():
    header = read_exact(3)
    length = int.from_bytes(header[1:], "big")
    return header[:1], read_exact(length) if length else b""


def send(kind, text=""):
    payload = text.encode() if isinstance(text, str) else text
    os.write(1, kind + len(payload).to_bytes(2, "big") + payload)


def ask(prompt="Fake key PIN: "):
    send(b"P", prompt)
    kind, payload = read_frame()
    return payload.decode() if kind == b"S" else None


def main(behaviour):
    kind, request = read_frame()
    assert kind == b"Q", kind
    fields = dict(line.split("=", 1) for line in request.decode().splitlines())
    if behaviour == "success":
        send(b"V", "success\nfake helper says yes")
    elif behaviour == "auth_err":
        send(b"E", "fake: denied")
        send(b"V", "auth_err")
    elif behaviour == "user_unknown":
        send(b"V", "user_unknown")
    elif behaviour == "authinfo_unavail":
        send(b"V", "authinfo_unavail")
    elif behaviour == "pin_check":  # success only if the PIN received matches the one the test put in the user name
        expected = fields["user"].rsplit("-", 1)[-1]
        for _ in range(int(fields.get("max_tries", "3"))):
            pin = ask()
            if pin == expected:
                send(b"V", "success")
                return
            send(b"I", "Wrong PIN: 7 attempts left before the key locks.")
        send(b"V", "auth_err")
    elif behaviour.startswith("name_") or behaviour == "ask_account":  # usernameless: the U and A frames
        with open(sys.argv[2] + ".user") as f:  # the name to give, beside the helper= program
            name = f.read()
        if behaviour == "ask_account":
            send(b"A", "  1) a\n  2) b\nWhich account? ")
            read_frame()
            send(b"V", "auth_err")
            return
        send(b"U", name)
        if behaviour == "name_twice":
            send(b"U", name)
        if behaviour == "name_then_info":
            send(b"I", "one more thing")
        send(b"V", "auth_err" if behaviour == "name_then_auth_err" else "success\nfake helper names the user")
    elif behaviour == "echo_request":  # the request's lines, joined with '|', shown as an error message
        send(b"E", "request: " + "|".join(request.decode().splitlines()) + "|")
        send(b"V", "auth_err")
    elif behaviour == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif behaviour == "killed_midway":
        ask()
        os.kill(os.getpid(), signal.SIGKILL)
    elif behaviour == "hang":
        time.sleep(3600)
    elif behaviour == "hang_after_verdict":
        send(b"V", "success")
        time.sleep(3600)
    elif behaviour == "close_then_hang":
        send(b"V", "success")
        os.close(0), os.close(1)
        time.sleep(3600)
    elif behaviour == "close_then_exit_late":  # a clean helper that is slow to exit after its verdict
        send(b"V", "success")
        os.close(0), os.close(1)
        time.sleep(1.5)  # longer than the test's timeout=1: reaping has a deadline of its own
    elif behaviour == "signals":  # report the blocked and ignored signal sets as exec'd (hex, /proc)
        with open("/proc/self/status") as f:
            sets = {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k in ("SigBlk", "SigIgn")}
        send(b"I", f"blocked: {sets['SigBlk']} ignored: {sets['SigIgn']}")
        send(b"V", "auth_err")
    elif behaviour == "garbage":
        os.write(1, b"HTTP/1.1 200 OK\r\nsuccess\r\n")
    elif behaviour == "oversized":
        os.write(1, b"I\xff\xff" + b"x" * 65535)
    elif behaviour == "eof":
        pass
    elif behaviour == "lie":  # claims success, then fails: the exit status must win
        send(b"V", "success")
        sys.exit(1)
    elif behaviour == "trailing":
        send(b"V", "success")
        send(b"I", "one more thing")
    elif behaviour == "bad_verdict":
        send(b"V", "successful")
    elif behaviour == "nul_verdict":
        send(b"V", b"success\0")
    elif behaviour == "many_prompts":
        while ask() is not None:
            pass
        send(b"V", "auth_err")
    elif behaviour == "replay":  # writes the chunks in <own path>.json, awaiting the module's answer after prompts
        import json

        with open(sys.argv[2] + ".json") as f:  # beside the helper= program (tests/pam/stack.py)
            for chunk in json.load(f):
                os.write(1, bytes.fromhex(chunk["hex"]))
                if chunk["await"]:
                    read_frame()
    elif behaviour == "fds":  # report the open descriptors (the listing's own descriptor excluded)
        fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))
        send(b"I", "fds: " + ",".join(map(str, fds)))
        with open("/proc/self/environ", "rb") as f:  # as exec'd (Python itself adds LC_CTYPE to os.environ)
            env = sorted(v.split(b"=", 1)[0].decode() for v in f.read().split(b"\0") if v)
        send(b"I", "env: " + ",".join(env))
        send(b"V", "auth_err")
    else:
        sys.exit(9)


if __name__ == "__main__":
    main(sys.argv[1])
