"""Generate what `make install` installs besides code, from the code, so none of it can drift:

- the man pages hmacunlock(8) (from the argparse parser, the config settings and the exit codes) and
  pam_hmacunlock(8) (from the PAM option table, hmacunlock_pam.options);
- the bash completion (from the parser);
- the commented configuration file (from libhmacunlock.config.SETTINGS).

    python tools/gen_dist.py man DIR           # DIR/hmacunlock.8, DIR/pam_hmacunlock.8
    python tools/gen_dist.py completion FILE
    python tools/gen_dist.py conf FILE

Run with an interpreter that has hmacunlock installed (`make install` uses the environment it just built).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Iterator
from pathlib import Path

SOURCE_DATE = datetime.date(2026, 1, 1)  # reproducible builds: no build date in the pages


def roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln[:1] in (".", "'") else ln for ln in text.split("\n"))


def _walk(
    parser: argparse.ArgumentParser, path: list[str], summary: str
) -> Iterator[tuple[list[str], argparse.ArgumentParser, str]]:
    yield path, parser, summary
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from _walk(sub, path + [name], helps.get(name) or "")


def commands() -> list[tuple[list[str], argparse.ArgumentParser, str]]:
    from hmacunlock_cli.main import build_parser

    return list(_walk(build_parser(), ["hmacunlock"], ""))


def _option_name(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest)
    metavar = ""
    if action.nargs != 0:
        metavar = " " + (
            " ".join(action.metavar) if isinstance(action.metavar, tuple) else action.metavar or action.dest.upper()
        )
    return ", ".join(o + metavar for o in action.option_strings)


def _usage(parser: argparse.ArgumentParser, path: list[str]) -> str:
    formatter = argparse.HelpFormatter(prog=" ".join(path), width=10_000)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _header(name: str, summary: str, version: str) -> list[str]:
    return [
        f'.TH {name.upper()} 8 "{SOURCE_DATE.isoformat()}" "hmacunlock {version}" "System Administration"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary)}",
    ]


def hmacunlock_page() -> str:
    from libhmacunlock import __version__
    from libhmacunlock.config import SETTINGS
    from libhmacunlock.errors import ExitCode

    cmds = commands()
    out = _header(
        "hmacunlock", "sign in and unlock disks and profiles with a FIDO2 security key and its PIN", __version__
    )
    out += [".SH SYNOPSIS", ".B hmacunlock\n[\\-\\-config FILE] COMMAND [ARGS]"]
    out += [
        ".SH DESCRIPTION",
        roff(
            "hmacunlock derives a per-user unlock key from a FIDO2 security key's hmac-secret, computed inside the key "
            "after it has checked the PIN. It enrolls users, signs them in through PAM (pam_hmacunlock(8)) and unlocks "
            "LUKS2 volumes and fscrypt profile directories. PINs, passphrases and recovery keys are never options: "
            "they are read from the terminal without echo, or one line per prompt from standard input when it is not "
            "a terminal."
        ),
        ".SH COMMANDS",
    ]
    for path, parser, summary in cmds[1:]:
        out += [".SS " + roff(" ".join(path)), roff(parser.description or summary or ""), ".PP", ".nf"]
        out += [roff(_usage(parser, path)), ".fi"]
        for action in parser._actions:
            if (
                isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
                or action.help == argparse.SUPPRESS
            ):
                continue
            out += [".TP", ".B " + roff(_option_name(action)), roff(action.help or "")]
    out += [".SH OPTIONS", ".TP", ".B \\-\\-config FILE", roff(_config_help(cmds[0][1]))]
    out += [
        ".SH CONFIGURATION",
        roff(
            "/etc/hmacunlock/hmacunlock.conf holds defaults, one 'key = value' per line ('#' starts a comment). An "
            "explicit option on the command line or the PAM line wins. A bad line is an error naming the file and the "
            "line. The file must be root's and writable by root only. Settings:"
        ),
    ]
    for s in SETTINGS:
        out += [".TP", f".B {roff(s.key)} = {roff(s.value)}", roff(s.help)]
    out += [".SH EXIT STATUS", ".TS", "l l.", *(f"{int(c)}\t{roff(c.name)}" for c in ExitCode), ".TE"]
    out += [
        ".SH FILES",
        ".TP\n.I /etc/hmacunlock/hmacunlock.conf\nthe defaults (above)",
        ".TP\n.I /var/lib/hmacunlock\nthe store: one record per user, root's, mode 0711",
        ".TP\n.I /run/hmacunlock/helper.sock\nthe warm helper's socket (hmacunlock\\-helper.socket)",
        ".SH SEE ALSO",
        "pam_hmacunlock(8), pam\\-auth\\-update(8), cryptsetup(8)",
    ]
    return "\n".join(out) + "\n"


def _config_help(parser: argparse.ArgumentParser) -> str:
    for action in parser._actions:
        if "--config" in action.option_strings:
            return action.help or ""
    raise SystemExit("the parser has no --config option")


def pam_page() -> str:
    from hmacunlock_pam.options import OPTIONS

    from libhmacunlock import __version__

    out = _header("pam_hmacunlock", "PAM module: sign in with a FIDO2 security key and its PIN", __version__)
    out += [".SH SYNOPSIS", ".B auth sufficient pam_hmacunlock.so\n[OPTION ...]"]
    out += [
        ".SH DESCRIPTION",
        roff(
            "pam_hmacunlock asks for the security key's PIN through the PAM conversation, runs its helper (the "
            "warm helper over its socket when one answers, otherwise a freshly spawned helper process), and "
            "returns PAM_SUCCESS only after the key's answer has been verified and the user's unlock key unwrapped. "
            "Options marked (config) take their default from /etc/hmacunlock/hmacunlock.conf; the rest are read by "
            "the module itself and only from the PAM line. Enable the packaged profile with "
            "'pam-auth-update --enable hmacunlock'."
        ),
        ".SH OPTIONS",
    ]
    for o in OPTIONS:
        name = o.name + (f"={o.value}" if o.value else "")
        out += [".TP", ".B " + roff(name), roff(o.help + (" (config)" if o.config else ""))]
    out += [
        ".SH RETURN VALUES",
        ".TP\n.B PAM_SUCCESS\nthe PIN was right and the key's answer verified",
        ".TP\n.B PAM_AUTH_ERR\nwrong PIN, credential not on the key, failed verification, unsafe record",
        ".TP\n.B PAM_AUTHINFO_UNAVAIL\nno key, or the user is not enrolled",
        ".TP\n.B PAM_IGNORE\nonly with nouserok, for a user who is not enrolled",
        ".TP\n.B PAM_SYSTEM_ERR\na bad option, a broken helper, a timeout",
        ".SH FILES",
        ".TP\n.I /usr/share/pam\\-configs/hmacunlock\nthe pam\\-auth\\-update profile (not enabled by the install)",
        ".TP\n.I /run/hmacunlock/helper.sock\nthe warm helper's socket, tried first by default",
        ".SH SEE ALSO",
        "hmacunlock(8), pam(7), pam.conf(5), pam\\-auth\\-update(8), pamtester(1)",
    ]
    return "\n".join(out) + "\n"


def completion() -> str:
    """A bash completion: at each command level, its subcommands and options."""
    cases = []
    for path, parser, _ in commands():
        words: list[str] = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                words += list(action.choices)
            elif action.help != argparse.SUPPRESS:
                words += [o for o in action.option_strings if o.startswith("--") or len(action.option_strings) == 1]
        cases.append(f'        "{" ".join(path[1:])}") words="{" ".join(words)}" ;;')
    return "\n".join(
        [
            "# bash completion for hmacunlock (generated by tools/gen_dist.py from the argparse parser)",
            "_hmacunlock() {",
            "    local cur=${COMP_WORDS[COMP_CWORD]} path='' word words next i",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            "        word=${COMP_WORDS[i]}",
            "        [[ $word == -* ]] && continue",
            '        next="${path:+$path }$word"',
            '        case "$next" in',
            *[f'            "{" ".join(p[1:])}") path=$next ;;' for p, _, _ in commands()[1:]],
            "        esac",
            "    done",
            '    case "$path" in',
            *cases,
            "        *) words='' ;;",
            "    esac",
            '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
            "}",
            "complete -o default -F _hmacunlock hmacunlock",
            "",
        ]
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["man", "completion", "conf"])
    p.add_argument("target", type=Path)
    args = p.parse_args(argv)
    if args.what == "man":
        args.target.mkdir(parents=True, exist_ok=True)
        (args.target / "hmacunlock.8").write_text(hmacunlock_page())
        (args.target / "pam_hmacunlock.8").write_text(pam_page())
    elif args.what == "completion":
        args.target.write_text(completion())
    else:
        from libhmacunlock.config import template

        args.target.write_text(template())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
