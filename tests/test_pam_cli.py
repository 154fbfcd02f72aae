"""`hmacunlock pam path` and `hmacunlock pam snippet`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hmacunlock_cli import cmd_pam
from hmacunlock_cli.main import main

from libhmacunlock.errors import ExitCode
from tests.pam.stack import SOURCE_TREE_MODULE, require_source_tree_module


def test_path_prints_the_built_module(capsys):
    require_source_tree_module()
    assert main(["pam", "path"]) == 0
    out = capsys.readouterr().out.strip()
    assert Path(out).is_absolute() and Path(out) == SOURCE_TREE_MODULE


def test_path_when_not_built_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(cmd_pam, "MODULE_NAME", "pam_hmacunlock_never_built.so")
    assert main(["pam", "path"]) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert "not built" in err and "make pam" in err


@pytest.mark.parametrize(
    "argv, control", [([], "sufficient"), (["--sufficient"], "sufficient"), (["--required"], "required")]
)
def test_snippet_names_the_module_by_absolute_path(capsys, argv, control):
    require_source_tree_module()
    assert main(["pam", "snippet", *argv]) == 0
    assert capsys.readouterr().out.split() == ["auth", control, str(SOURCE_TREE_MODULE), "cue"]


def test_snippet_with_device_and_a_relative_store(capsys, tmp_path, monkeypatch):
    require_source_tree_module()
    monkeypatch.chdir(tmp_path)
    assert main(["pam", "snippet", "--required", "--device", "udp:127.0.0.1:4242", "--store", "store"]) == 0
    words = capsys.readouterr().out.split()
    assert f"store={tmp_path / 'store'}" in words and "device=udp:127.0.0.1:4242" in words


def test_snippet_refuses_white_space(capsys):
    require_source_tree_module()
    assert main(["pam", "snippet", "--store", "/srv/my store"]) != 0
    assert "white space" in capsys.readouterr().err


def test_sufficient_and_required_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pam", "snippet", "--sufficient", "--required"])
    assert exc.value.code == 2


def test_snippet_with_usernameless(capsys):
    require_source_tree_module()
    assert main(["pam", "snippet", "--usernameless"]) == 0
    assert capsys.readouterr().out.split() == ["auth", "sufficient", str(SOURCE_TREE_MODULE), "usernameless", "cue"]
