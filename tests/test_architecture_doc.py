"""docs/architecture.md matches the code: every file it names exists, every store table and room is covered."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from insightloop.daemon.state import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_every_file_it_names_exists() -> None:
    named = set(re.findall(r"`((?:daemon|detectors|deploy|retrain|tests/\w+)/[\w/]+\.py)", DOC))
    assert len(named) >= 15
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_store_table_has_its_place() -> None:
    tables = re.findall(r"CREATE TABLE (\w+)", "\n".join(MIGRATIONS))
    missing = [t for t in tables if f"`{t}`" not in DOC]
    assert not missing, f"docs/architecture.md does not say what these tables keep: {missing}"


def test_the_public_names_it_lists_are_exported() -> None:
    for room in ("detectors", "deploy", "retrain", "daemon"):
        tree = ast.parse((REPO / room / "__init__.py").read_text(encoding="utf-8"))
        exported = next(
            set(ast.literal_eval(node.value))
            for node in tree.body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__"
        )
        line = next(line for line in DOC.splitlines() if line.startswith(f"- `insightloop.{room}`"))
        block = DOC[DOC.index(line) :].split("\n- `insightloop.", 1)[0].split("\n\n", 1)[0]
        block = re.sub(r"\([^)]*\)", "", block)  # methods named in parentheses belong to the class before them
        names = {n.split(".")[0] for n in re.findall(r"`(\w[\w.]*)", block)}
        names = {n for n in names if not n.startswith("insightloop")}
        assert names <= exported, f"{room}: listed but not exported: {sorted(names - exported)}"
