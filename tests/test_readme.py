"""The README's two commands are the ones CI runs, and its CLI examples parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from insightloop.daemon.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def fenced_commands(section: str) -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    body = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", body, re.S)
    assert block, f"README section {section!r} has no bash block"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_install_and_test_commands_are_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    (install,) = fenced_commands("Install")
    (test,) = fenced_commands("Test")
    assert install.replace("python3 -m pip install", "python3 -m pip install -q") in ci
    assert test in ci


def test_every_cli_example_in_the_readme_parses() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [b.replace("\\\n", " ") for b in re.findall(r"```bash\n(.*?)```", readme, re.S)]
    commands = [
        line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("insightloop ")
    ]
    assert len(commands) >= 6
    parser = build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])
