"""The import graph runs one way: data -> plan -> storage -> model -> train,
with distributed/ wrapping the others and never imported by them."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "hotpipe"
# A stage may import itself and the stages listed for it, nothing later.
ALLOWED = {
    "data": {"data"},
    "plan": {"plan", "data"},
    "storage": {"storage", "plan", "data"},
    "model": {"model", "data", "storage"},
    "train": {"train", "data", "plan", "storage", "model"},
    "profile": {"profile", "data", "plan", "storage", "model", "train"},
    "distributed": {"distributed", "data", "plan", "storage", "model", "train"},
}
SHARED = {"errors", "config"}  # leaf modules every stage may use


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hotpipe."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("hotpipe.")}
    return out


def test_stages_import_one_way():
    bad = []
    for stage, allowed in ALLOWED.items():
        for f in (PKG / stage).rglob("*.py"):
            for imp in _imports(f) - allowed - SHARED:
                bad.append(f"{f.relative_to(PKG)} imports hotpipe.{imp}")
    assert not bad, bad


def test_nothing_imports_distributed():
    users = [f for f in PKG.rglob("*.py") if "distributed" in _imports(f)
             and "distributed" not in f.parts]
    assert not users, users
