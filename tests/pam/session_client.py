"""A PAM application for the session tests: one process holding one PAM handle through real libpam (python-pam),
driven line by line on stdin so a test can keep a session open while another process opens or closes its own.

    python -m tests.pam.session_client SERVICE USER
    stdin:  auth PIN | open | close | end        stdout: one line per command: `COMMAND CODE MESSAGES(JSON)`

`auth` is pam_start + pam_authenticate + pam_acct_mgmt + pam_setcred (python-pam's authenticate, the handle kept),
answering every echo-off prompt with PIN; CODE is the PAM result (0 = PAM_SUCCESS).
"""

from __future__ import annotations

import json
import sys

import pam


def main() -> int:
    service, user = sys.argv[1], sys.argv[2]
    p = pam.pam()
    for line in sys.stdin:
        command, _, argument = line.rstrip("\n").partition(" ")
        if command == "auth":
            p.authenticate(user, argument, service=service, call_end=False)
            code = p.code
        elif command == "open":
            code = p.open_session()
        elif command == "close":
            code = p.close_session()
        elif command == "end":
            p.end()
            print("end 0 []", flush=True)
            return 0
        else:
            code = -1
        print(f"{command} {code} {json.dumps(p.messages)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
