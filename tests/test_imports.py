"""Every import is declared, and dependencies run one way (tools -> product, client -/-> server).

Walks the AST of every module (imports inside functions count: a lazy import still needs its
package when it runs), follows first-party imports module by module, and checks what each
package reaches against the role that installs it: the bare install (the client), or one of the
extras in pyproject.toml. A third-party package counts only when the role names it itself: one
that merely arrives with another (aioice with aiortc, cryptography with aiortc) is not declared.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

# package -> (the role that installs it, the first-party packages it may reach)
ROLES: dict[str, tuple[str, frozenset[str]]] = {
    "fileshare": ("", frozenset({"fileshare", "fsproto"})),
    "fsproto": ("", frozenset({"fsproto"})),
    "signaling": ("server", frozenset({"signaling", "turn", "fsproto"})),
    "turn": ("server", frozenset({"turn", "fsproto"})),
    "netsim": ("lab", frozenset({"netsim", "turn", "signaling", "fsproto"})),
    "loadtest": ("loadtest", frozenset({"loadtest", "netsim", "signaling", "turn", "fsproto"})),
    "benches": ("lab", frozenset({"benches", "fileshare", "netsim", "turn", "fsproto"})),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {
    _module_name(p): p for package in ROLES for p in (REPO / package).rglob("*.py")
}


@cache
def _imports(module: str) -> frozenset[str]:
    """Dotted names the module imports (relative imports resolved)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def _reach(module: str) -> tuple[set[str], set[str]]:
    """(first-party modules, third-party top-level names) reachable from `module`."""
    seen, third, todo = {module}, set(), [module]
    while todo:
        for name in _imports(todo.pop()):
            top = name.partition(".")[0]
            if name in MODULES and name not in seen:
                seen.add(name)
                todo.append(name)
            elif top not in MODULES and top not in sys.stdlib_module_names:
                third.add(top)
    return seen, third


@cache
def _declared(role: str) -> frozenset[str]:
    """Distributions a role names: the base dependencies plus its extra (and the extras that
    extra pulls in with `fileshare[...]`)."""
    requirements = list(PROJECT["dependencies"])
    if role:
        requirements += PROJECT["optional-dependencies"][role]
    names: set[str] = set()
    for text in requirements:
        req = Requirement(text)
        if canonicalize_name(req.name) == "fileshare":
            for extra in req.extras:
                names |= _declared(extra)
        else:
            names.add(canonicalize_name(req.name))
    return frozenset(names)


@cache
def _installed() -> dict[str, frozenset[str]]:
    """Top-level import name -> the distributions that provide it, in this environment."""
    return {
        top: frozenset(canonicalize_name(d) for d in dists)
        for top, dists in importlib.metadata.packages_distributions().items()
    }


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_is_declared_by_the_role_that_installs_it(module: str) -> None:
    role, allowed = ROLES[module.partition(".")[0]]
    first_party, third_party = _reach(module)
    strays = {m for m in first_party if m.partition(".")[0] not in allowed}
    assert not strays, f"{module} reaches {sorted(strays)}: dependencies must run one way"
    declared = _declared(role)
    missing = {top for top in third_party if not _installed().get(top, frozenset()) & declared}
    assert not missing, f"{module} imports {sorted(missing)}, not declared for {role or 'client'}"


def test_the_client_reaches_neither_server_nor_test_bed() -> None:
    """The CLI's whole import closure, named: the rule above in the one place users meet it."""
    first_party, third_party = _reach("fileshare.cli")
    assert {m.partition(".")[0] for m in first_party} <= {"fileshare", "fsproto"}
    assert not third_party & {"docker", "pyroute2", "matplotlib", "netfilterqueue", "locust"}
    assert not third_party & {"redis", "prometheus_client", "jinja2"}
