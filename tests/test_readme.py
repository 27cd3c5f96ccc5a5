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


def ci_commands() -> list[str]:
    return [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]


def test_install_and_test_commands_are_what_ci_runs() -> None:
    ci = ci_commands()
    install = fenced_commands("Install")
    (test,) = fenced_commands("Test")
    # A fresh virtual environment of its own, activated, then the one install command.
    assert install[0].startswith("python3 -m venv ") and "--system-site-packages" not in install[0]
    assert install[1].startswith(". ") and install[1].endswith("/bin/activate")
    assert sum("pip install" in line for line in install) == 1
    # CI runs the same lines in the same order (adding only -q to pip), then the test command.
    as_in_ci = [line.replace("pip install ", "pip install -q ") for line in install]
    assert all(line in ci for line in as_in_ci), as_in_ci
    positions = [ci.index(line) for line in as_in_ci]
    assert positions == sorted(positions)
    assert test in ci and ci.index(test) > positions[-1]


def test_every_default_output_folder_is_ignored_by_git() -> None:
    from insightloop.daemon.cli import build_parser
    from insightloop.daemon.config import Config

    ignored = set((REPO / ".gitignore").read_text(encoding="utf-8").split())
    config = Config()
    demo = build_parser().parse_args(["demo"])
    defaults = {config.registry.path, config.state.dir, demo.workdir, Path(".venv")}
    assert {f"{d.as_posix()}/" for d in defaults} <= ignored


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
