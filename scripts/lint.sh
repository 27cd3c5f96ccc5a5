#!/usr/bin/env bash
# ruff (lint + format check), mypy --strict and the import-linter contracts.
# mypy and import-linter read source folders, not the editable install, so a small symlink
# tree (.typecheck/insightloop/<room> -> <room>) shows them the installed package layout.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .typecheck/insightloop
for room in daemon detectors retrain deploy; do ln -sfn "../../$room" ".typecheck/insightloop/$room"; done
ruff check .
ruff format --check .
MYPYPATH=.typecheck mypy -p insightloop.daemon -p insightloop.detectors -p insightloop.deploy -p insightloop.retrain
PYTHONPATH=.typecheck lint-imports
