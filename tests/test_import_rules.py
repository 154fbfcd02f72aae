"""The import rules of the design, checked on the source with `ast` (docs/internals.md, Rooms and their rules).

Every import counts: top-level, inside a function (a lazy import is still a dependency) and under TYPE_CHECKING.
Relative imports are resolved to absolute module names. The checker is shown to catch each rule being broken on a
synthetic tree in a temporary directory, so a rule that silently matched nothing would fail here.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> import name (setup.cfg's package_dir)
PACKAGES = {"libhmacunlock": "libhmacunlock", "cli": "hmacunlock_cli", "pam_module": "hmacunlock_pam"}
STDLIB = frozenset(sys.stdlib_module_names)
IO_MODULES = frozenset({"socket", "subprocess", "fcntl", "tempfile", "shutil", "pathlib", "io", "select", "ctypes"})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. libhmacunlock.softkey.device
    target: str  # what it imports, absolute, e.g. libhmacunlock.errors
    line: int


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    for folder, name in PACKAGES.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((name, *parts)), path


def imports(root: Path) -> list[Import]:
    found = []
    for module, path in modules(root):
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(module, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from . import keys` imports the module libhmacunlock.keys: name each imported name as a
                # submodule too, so a rule on modules sees it (a rule on packages matches either way)
                found.append(Import(module, target, node.lineno))
                found += [Import(module, f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@dataclass(frozen=True)
class Rule:
    text: str
    applies: Callable[[str], bool]  # to the importing module
    refuses: Callable[[str], bool]  # the imported name


def _client_side(target: str) -> bool:
    return within(target, "libhmacunlock") and not within(target, "libhmacunlock.softkey") and target != "libhmacunlock"


def _keys_refuses(target: str) -> bool:
    if within(target, "libhmacunlock"):
        return target != "libhmacunlock" and not within(target, "libhmacunlock.errors")
    return within(target, "fido2") or target.split(".")[0] in IO_MODULES


def _stdlib_only(allowed: tuple[str, ...]) -> Callable[[str], bool]:
    def refuses(target: str) -> bool:
        if target in ("__future__",) or target.split(".")[0] in STDLIB:
            return False
        return not any(within(target, a) for a in allowed)

    return refuses


RULES = [
    Rule(
        "the software key imports nothing else from libhmacunlock (it is the other side of the wire)",
        lambda m: within(m, "libhmacunlock.softkey"),
        _client_side,
    ),
    Rule(
        "the library imports neither the CLI nor the PAM module",
        lambda m: within(m, "libhmacunlock"),
        lambda t: within(t, "hmacunlock_cli") or within(t, "hmacunlock_pam"),
    ),
    Rule(
        "keys.py is pure: errors only from the library, no python-fido2, no I/O modules",
        lambda m: m == "libhmacunlock.keys",
        _keys_refuses,
    ),
    Rule(
        "the key side (device, discovery, fido2_compat, keyinfo, udp) never touches the store or the records",
        lambda m: m in {f"libhmacunlock.{name}" for name in ("device", "discovery", "fido2_compat", "keyinfo", "udp")},
        lambda t: within(t, "libhmacunlock.store") or within(t, "libhmacunlock.records"),
    ),
    Rule(
        "targets take an unlock key or a volume: they never speak to the key or the person (flows do)",
        lambda m: within(m, "libhmacunlock.targets"),
        lambda t: (
            any(
                within(t, f"libhmacunlock.{name}")
                for name in (
                    "device",
                    "discovery",
                    "fido2_compat",
                    "udp",
                    "interaction",
                    "unlock",
                    "enroll",
                    "recovery",
                )
            )
            or within(t, "fido2")
        ),
    ),
    Rule(
        "the interaction events are cheap: standard library and errors only (the PAM helper's hot path)",
        lambda m: m == "libhmacunlock.interaction",
        _stdlib_only(("libhmacunlock.errors",)),
    ),
    Rule(
        "the PAM channel protocol is standard library only (imported before the PIN prompt)",
        lambda m: m == "hmacunlock_pam.protocol",
        _stdlib_only(()),
    ),
]


def violations(root: Path) -> list[str]:
    return [
        f"{i.module} line {i.line} imports {i.target}: {rule.text}"
        for i in imports(root)
        for rule in RULES
        if rule.applies(i.module) and rule.refuses(i.target)
    ]


def test_the_tree_keeps_the_import_rules():
    assert violations(ROOT) == []


def test_the_checker_sees_the_whole_tree():
    found = {i.module for i in imports(ROOT)}
    for module in ("libhmacunlock.softkey.authenticator", "libhmacunlock.keys", "libhmacunlock.device",
                   "hmacunlock_cli.main", "hmacunlock_pam.protocol"):  # fmt: skip
        assert module in found
    assert "libhmacunlock.records" in {i.target for i in imports(ROOT) if i.module == "libhmacunlock.unlock"}


# --- the checker catches each rule being broken -----------------------------------------------------------------

BROKEN = {
    "libhmacunlock/__init__.py": "",
    "libhmacunlock/errors.py": "",
    "libhmacunlock/softkey/__init__.py": "",
    "libhmacunlock/softkey/ok.py": "from . import pin\nfrom .wire import x\nfrom fido2 import cbor\n",
    "libhmacunlock/softkey/bad.py": "from ..device import Key\n",
    "libhmacunlock/softkey/lazy.py": "def f():\n    import libhmacunlock.store\n",
    "libhmacunlock/leaky.py": "import typing\nif typing.TYPE_CHECKING:\n    from hmacunlock_cli import main\n",
    "libhmacunlock/keys.py": "import os\nfrom . import store\nfrom .errors import RecoveryFailed\nimport subprocess\n",
    "libhmacunlock/device.py": "def open():\n    from .store import Store\n",
    "libhmacunlock/interaction.py": "import enum\nfrom fido2 import cbor\n",
    "libhmacunlock/targets/__init__.py": "",
    "libhmacunlock/targets/vault.py": "from ..keys import derive\nfrom ..interaction import Purpose\n",
    "cli/__init__.py": "",
    "pam_module/__init__.py": "",
    "pam_module/protocol.py": "import os\nfrom libhmacunlock.errors import Cancelled\n",
}


def test_a_broken_rule_is_caught(tmp_path):
    for name, source in BROKEN.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    found = violations(tmp_path)
    expected = [
        "libhmacunlock.softkey.bad line 1 imports libhmacunlock.device",
        "libhmacunlock.softkey.bad line 1 imports libhmacunlock.device.Key",
        "libhmacunlock.softkey.lazy line 2 imports libhmacunlock.store",
        "libhmacunlock.leaky line 3 imports hmacunlock_cli",
        "libhmacunlock.keys line 2 imports libhmacunlock.store",
        "libhmacunlock.keys line 4 imports subprocess",
        "libhmacunlock.device line 2 imports libhmacunlock.store",
        "libhmacunlock.interaction line 2 imports fido2",
        "libhmacunlock.targets.vault line 2 imports libhmacunlock.interaction",
        "hmacunlock_pam.protocol line 2 imports libhmacunlock.errors",
    ]
    for prefix in expected:
        assert any(v.startswith(prefix + ":") for v in found), (prefix, found)
    # and nothing that keeps the rules: the softkey's own modules and python-fido2, keys' errors and os, a
    # target's keys
    kept = ("softkey.ok ", "keys line 1 ", "keys line 3 ", "targets.vault line 1 ")
    assert not [v for v in found if v.startswith(tuple("libhmacunlock." + k for k in kept))]


@pytest.mark.parametrize(
    ("source", "package", "expected"),
    [
        ("from . import keys", "libhmacunlock", "libhmacunlock.keys"),
        ("from ..errors import X", "libhmacunlock.targets", "libhmacunlock.errors"),
        ("from .luks import Volume", "libhmacunlock.targets", "libhmacunlock.targets.luks"),
        ("from ... import errors", "libhmacunlock.softkey.x", "libhmacunlock.errors"),
    ],
)
def test_relative_imports_resolve(tmp_path, source, package, expected):
    folder = tmp_path / "libhmacunlock" / Path(*package.split(".")[1:])
    folder.mkdir(parents=True, exist_ok=True)
    (tmp_path / "libhmacunlock" / "__init__.py").write_text("")
    (folder / "m.py").write_text(source + "\n")
    targets = {i.target for i in imports(tmp_path) if i.module == f"{package}.m"}
    assert expected in targets
