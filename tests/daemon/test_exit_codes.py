"""The CLI maps each room's error kinds to named exit codes; a plain ValueError is a bug, not a usage error."""

from __future__ import annotations

import pytest

from insightloop.daemon.cli import exit_code_for
from insightloop.daemon.errors import BrokerUnreachableError, ConfigError, ExitCode
from insightloop.deploy import DeployPermanentError, DeployTemporaryError, ModelLoadError, RegistryError
from insightloop.detectors import DetectorPermanentError, DetectorTemporaryError
from insightloop.retrain import DataFileError, RetrainPermanentError, RetrainTemporaryError

CASES: list[tuple[BaseException, ExitCode | None]] = [
    (ConfigError("kafka.bootstrap_servers: empty"), ExitCode.CONFIG_ERROR),
    (BrokerUnreachableError("no broker at 127.0.0.1:1"), ExitCode.BROKER_UNREACHABLE),
    (DataFileError("train.jsonl line 3: no text"), ExitCode.DATA_ERROR),
    (ModelLoadError("v0003 has no weights"), ExitCode.NO_MODEL),
    (RegistryError("no version v0099"), ExitCode.NO_MODEL),
    (DeployTemporaryError("registry volume busy"), ExitCode.TEMPORARY_FAILURE),
    (RetrainTemporaryError("Kubernetes API away"), ExitCode.TEMPORARY_FAILURE),
    (DetectorTemporaryError("too few rows yet"), ExitCode.TEMPORARY_FAILURE),
    (DeployPermanentError("half-written version"), ExitCode.FAILURE),
    (RetrainPermanentError("spec names no plan"), ExitCode.FAILURE),
    (DetectorPermanentError("profile of another label set"), ExitCode.FAILURE),
    (ValueError("a bug somewhere"), None),
    (KeyError("also a bug"), None),
]


@pytest.mark.parametrize(("error", "code"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_kind_of_error_has_its_exit_code(error: BaseException, code: ExitCode | None) -> None:
    assert exit_code_for(error) == code


def test_the_kubernetes_runners_errors_have_their_kinds() -> None:
    from insightloop.retrain import kubernetes_runner

    assert exit_code_for(kubernetes_runner.KubernetesUnavailableError("503")) == ExitCode.TEMPORARY_FAILURE
    assert exit_code_for(kubernetes_runner.KubernetesPermissionError("403")) == ExitCode.FAILURE
