"""The ``--task`` option the commands share: which kind of model a command trains, reads or watches."""

from __future__ import annotations

import argparse
from typing import cast

from insightloop.deploy import TASKS, TOKEN_TASK, Task

#: ``ner`` is the short name people type for a token classifier.
ALIASES: dict[str, Task] = {"ner": TOKEN_TASK}


def add_task_option(parser: argparse.ArgumentParser, help: str, default: Task | None = "text-classification") -> None:
    """Add ``--task`` (one of :data:`TASKS`, or an alias); ``default=None`` leaves it unset (read from the model)."""
    parser.add_argument("--task", type=task_name, choices=TASKS, default=default, help=help)


def task_name(value: str) -> Task:
    """The task a ``--task`` value names (aliases resolved; argparse checks the choices)."""
    return ALIASES.get(value, cast(Task, value))


__all__ = ["add_task_option", "task_name"]
