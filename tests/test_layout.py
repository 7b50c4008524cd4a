"""The import graph runs one way (pyproject's import-linter contracts), and the check can fail.

import-linter resolves absolute, relative and function-level imports; a
small AST pass adds the one kind it cannot see, ``importlib.import_module``
with a literal (or literal-prefixed) module name.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
LAYERS = [m.split(".")[1] for m in CONFIG["contracts"][0]["layers"]]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the package under ``root`` (a copy or the real one)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _dynamic_violations(pkg: Path) -> list[str]:
    """``importlib.import_module("hotpipe.<x>...")`` calls that import a higher layer."""
    bad = []
    for f in pkg.rglob("*.py"):
        rel = f.relative_to(pkg)
        here = rel.parts[0].removesuffix(".py")
        if here not in LAYERS:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if not (isinstance(node, ast.Call) and node.args
                    and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"):
                continue
            arg = node.args[0]
            text = (arg.value if isinstance(arg, ast.Constant) else
                    arg.values[0].value if isinstance(arg, ast.JoinedStr) and arg.values
                    and isinstance(arg.values[0], ast.Constant) else "")
            parts = str(text).split(".")
            if (parts[0] == "hotpipe" and len(parts) > 1 and parts[1] in LAYERS
                    and LAYERS.index(parts[1]) < LAYERS.index(here)):
                bad.append(f"{rel}:{node.lineno} imports {text}")
    return bad


def test_the_package_keeps_its_contracts() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout
    assert _dynamic_violations(ROOT / "hotpipe") == []


def test_planted_violations_are_caught(tmp_path: Path) -> None:
    """Four ways to break the layering, each one reported (the check can fail)."""
    shutil.copytree(ROOT / "hotpipe", tmp_path / "hotpipe",
                    ignore=shutil.ignore_patterns("__pycache__"))
    pkg = tmp_path / "hotpipe"
    plants = {
        "data/_p1.py": "from hotpipe import train\n",                       # absolute, package
        "storage/_p2.py": "from ..train import loop\n",                     # relative
        "plan/_p3.py": "import importlib\nm = importlib.import_module('hotpipe.train.run')\n",
        "config.py": (pkg / "config.py").read_text() + "\n\ndef _x():\n    from hotpipe.train import run\n",
    }
    for rel, text in plants.items():
        (pkg / rel).write_text(text)
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout
    out = res.stdout
    assert "hotpipe.data._p1 -> hotpipe.train" in out
    assert "hotpipe.storage._p2 -> hotpipe.train.loop" in out
    assert "hotpipe.config -> hotpipe.train.run" in out
    assert _dynamic_violations(pkg) == ["plan/_p3.py:2 imports hotpipe.train.run"]


@pytest.mark.parametrize("stage", ["storage", "train", "model", "data", "plan"])
def test_nothing_below_imports_distributed(stage: str) -> None:
    # Covered by the layers contract; kept explicit because DESIGN.md names it.
    assert LAYERS.index("distributed") < LAYERS.index(stage)
