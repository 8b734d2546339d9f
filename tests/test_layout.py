"""The shape of the package: a pure core that imports nothing heavy, no import circle, and Celery
signals wired in one place. (`make lint` checks the import rules between stages: import-linter.)
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kakarot_workers"
HEAVY = ("celery", "kombu", "sqlalchemy", "redis", "httpx", "websocket", "psutil")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (migrations are Alembic's scripts)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports, at any depth of its code (a function-local import
    is still an import), resolved to the modules that exist."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_module_imports_itself_back_through_others():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    # a package imports nothing of its own modules: its __init__ is only a docstring
    assert graph["kakarot_workers"] == set()
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "module",
    [
        "kakarot_workers",
        "kakarot_workers.alerts.rules",
        "kakarot_workers.control.allocation",
        "kakarot_workers.sources.uniswap_v2",
        "kakarot_workers.notify.messages",
        "kakarot_workers.events",
        "kakarot_workers.queues",
        "kakarot_workers.status",
    ],
)
def test_the_pure_core_imports_without_celery_a_database_or_redis(module):
    """Imported in a fresh interpreter with no KAKAROT_* variable set: nothing heavy is loaded
    and no settings are read (an invalid setting would not stop the import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAKAROT_")}
    env["KAKAROT_BATCH_CAP"] = "not a number"  # reading the settings would fail
    code = (
        f"import json, sys; import {module}; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_only_the_app_and_the_worker_module_touch_celery_signals_or_bootsteps():
    touching = set()
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("celery")
            ):
                names = {alias.name for alias in node.names}
                if node.module in ("celery.signals", "celery.bootsteps") or names & {
                    "signals",
                    "bootsteps",
                }:
                    touching.add(name)
    assert touching == {"kakarot_workers.worker"}
