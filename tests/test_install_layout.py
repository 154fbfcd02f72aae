"""What `make install` generates from the code (man pages, completion, config template), the PAM option table
against the C module and docs/pam.md, the configuration file's parser and its use by the CLI and the helper, and
`hmacunlock doctor` in a source tree. No install here: tests/test_install_deb.py installs the package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hmacunlock_pam.options import NAMES, OPTIONS
from hmacunlock_pam.protocol import Request

from libhmacunlock import config
from libhmacunlock.errors import ConfigError, ExitCode

REPO = Path(__file__).resolve().parents[1]
GEN = [sys.executable, str(REPO / "tools" / "gen_dist.py")]
CLI = [sys.executable, "-m", "hmacunlock_cli"]


def commands() -> list[list[str]]:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import gen_dist
    finally:
        sys.path.pop(0)
    return [path for path, _, _ in gen_dist.commands()[1:]]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, str]:
    """Both man pages, generated as make install does, rendered by man -l."""
    if shutil.which("man") is None:
        pytest.skip("needs man (man-db) to render the pages")
    out = tmp_path_factory.mktemp("man")
    subprocess.run([*GEN, "man", str(out)], check=True)
    rendered = {}
    for page in ("hmacunlock.8", "pam_hmacunlock.8"):
        done = subprocess.run(
            ["man", "-l", "-P", "cat", str(out / page)],
            capture_output=True,
            text=True,
            env={**os.environ, "MANWIDTH": "200", "LANG": "C.UTF-8"},
        )
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr
        rendered[page] = done.stdout.replace("\u2010", "-").replace("\u2212", "-")
    return rendered


def test_the_hmacunlock_page_lists_every_subcommand_setting_and_exit_code(pages):
    text = pages["hmacunlock.8"]
    for path in commands():
        assert " ".join(path) in text, path
    for setting in config.SETTINGS:
        assert f"{setting.key} = " in text, setting.key
    for code in ExitCode:
        assert re.search(rf"^\s*{int(code)}\s+{code.name}\s*$", text, re.M), code


def test_the_pam_page_lists_every_option(pages):
    text = pages["pam_hmacunlock.8"]
    for option in OPTIONS:
        name = option.name + (f"={option.value}" if option.value else "")
        assert re.search(rf"^\s+{re.escape(name)}(\s|$)", text, re.M), name


def _c_options() -> set[str]:
    source = (REPO / "pam_module" / "pam_hmacunlock.c").read_text()
    body = source[source.index("static int parse_options(") :]
    body = body[: body.index("\n}\n")]
    flags = set(re.findall(r'!strcmp\(a, "([a-z_]+)"\)', body))
    valued = set(re.findall(r'"([a-z_]+)="', body))
    return flags | valued


def test_the_option_table_is_what_the_c_module_parses():
    assert _c_options() == set(NAMES)


def test_docs_pam_md_documents_every_option():
    table = (REPO / "docs" / "pam.md").read_text().split("## Options", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)[=`]", table, re.M))
    assert documented == set(NAMES)


def test_the_completion_offers_subcommands_and_options(tmp_path):
    script = tmp_path / "hmacunlock"
    subprocess.run([*GEN, "completion", str(script)], check=True)

    def complete(*words: str) -> set[str]:
        probe = (
            f"source {script}\nCOMP_WORDS=(hmacunlock {' '.join(words)})\nCOMP_CWORD={len(words)}\n"
            "_hmacunlock\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
        )
        done = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, check=True)
        return set(done.stdout.split())

    assert {"doctor", "enroll", "pam", "key"} <= complete("")
    assert complete("pam", "") == {"path", "snippet", "warm-helper", "--help"}
    assert {"--device", "--json"} <= complete("key", "info", "--")


def test_the_config_template_parses_and_names_every_setting(tmp_path):
    conf = tmp_path / "hmacunlock.conf"
    subprocess.run([*GEN, "conf", str(conf)], check=True)
    assert config.parse(conf.read_bytes(), str(conf)) == config.Config(path=str(conf))  # all commented out
    uncommented = re.sub(r"^#(\w+ = )", r"\1", conf.read_text(), flags=re.M).replace(
        "hmacunlock.HOSTNAME", "hmacunlock.example"
    )
    parsed = config.parse(uncommented.encode(), str(conf))
    assert parsed.device == "auto" and parsed.max_tries == 2 and parsed.cue is False
    assert {s.key for s in config.SETTINGS} == {k for k in config.Config._fields if k != "path"}


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("device = auto\ndevise = auto\n", 2, "unknown setting 'devise'"),
        ("# a comment\n\nmax_tries = 11\n", 3, "from 1 to 10"),
        ("store = relative/dir\n", 1, "absolute path"),
        ("cue = maybe\n", 1, "yes or no"),
        ("clone_policy = ignore\n", 1, "refuse or warn"),
        ("device = usb:1\n", 1, "device spec"),
        ("store = /a\nstore = /b\n", 2, "set twice"),
        ("just words\n", 1, "expected 'key = value'"),
        ("rp_id =\n", 1, "no value"),
    ],
)
def test_a_bad_line_is_a_typed_error_naming_file_and_line(text, line, words):
    with pytest.raises(ConfigError) as caught:
        config.parse(text.encode(), "/etc/x.conf")
    assert caught.value.line == line and words in caught.value.message
    assert caught.value.message.startswith(f"Configuration file /etc/x.conf, line {line}:")


def test_an_unsafe_or_missing_file_is_refused(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("device = auto\n")
    conf.chmod(0o664)
    with pytest.raises(ConfigError, match="writable by its owner only"):
        config.load(str(conf))
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "absent.conf"), required=True)
    assert config.load(str(tmp_path / "absent.conf")) == config.Config()  # the system file may be absent


def test_a_source_tree_reads_no_system_file():
    # Whatever /etc/hmacunlock holds on this machine (an installed package, another suite's install test), the
    # source tree's CLI and helper read none: only an installed environment has _hmacunlock_install.
    assert config.installation() is None and config.default_path() is None and config.load() == config.Config()


def test_the_cli_takes_defaults_from_config_and_explicit_options_win(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("device = udp:127.0.0.1:9\nstore = /srv/hmu-store\n")
    conf.chmod(0o644)
    line = subprocess.run([*CLI, "--config", str(conf), "pam", "snippet"], capture_output=True, text=True, cwd=REPO)
    assert line.returncode == 0, line.stderr
    assert "store=/srv/hmu-store" in line.stdout and "device=udp:127.0.0.1:9" in line.stdout
    line = subprocess.run(
        [*CLI, "--config", str(conf), "pam", "snippet", "--store", "/other"], capture_output=True, text=True, cwd=REPO
    )
    assert "store=/other" in line.stdout and "/srv/hmu-store" not in line.stdout


def test_the_cli_refuses_a_bad_config_naming_file_and_line(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("# ok\nmax_tries = none\n")
    conf.chmod(0o644)
    done = subprocess.run([*CLI, "--config", str(conf), "list"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == ExitCode.USAGE
    assert f"Configuration file {conf}, line 2: max_tries" in done.stderr


def test_the_helper_request_takes_config_defaults_under_the_pam_line():
    defaults = {"store": "/from/config", "device": "udp:127.0.0.1:9", "max_tries": 5, "cue": True}
    request = Request.parse(b"user=alice\nstore=/from/line\n", defaults=defaults)
    assert (request.store, request.device, request.max_tries, request.cue) == ("/from/line", "udp:127.0.0.1:9", 5, True)
    assert Request.parse(b"user=alice\n").max_tries == int(config.KEYS["max_tries"].value)  # the template's default


def test_doctor_in_a_source_tree_reports_and_exits_by_its_checks(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("nonsense\n")
    bad.chmod(0o644)
    done = subprocess.run([*CLI, "--config", str(bad), "doctor", "--json"], capture_output=True, text=True, cwd=REPO)
    report = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert done.returncode == 1 and report["healthy"] is False
    assert checks["config"]["status"] == "FAIL" and "line 1" in checks["config"]["message"]
    assert {"config", "module", "helper", "warm helper", "store", "key", "pam services"} <= set(checks)
