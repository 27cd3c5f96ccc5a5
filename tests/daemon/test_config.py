"""Configuration layering and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from insightloop.daemon.config import Config, config_reference_markdown, load_config, starter_config
from insightloop.daemon.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_need_no_file() -> None:
    config = load_config(None, environ={})
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.kafka.api_version_tuple() == (2, 5)
    assert config.topics.texts == "insightloop.texts"


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  bootstrap_servers: file:1\n  client_id: from-file\nscorer:\n  max_batch_size: 8\n")
    env = {
        "INSIGHTLOOP_KAFKA__BOOTSTRAP_SERVERS": "env:2",
        "INSIGHTLOOP_SCORER__MAX_BATCH_SIZE": "16",
        "UNRELATED": "x",
    }
    config = load_config(path, {"kafka": {"bootstrap_servers": "flag:3"}}, environ=env)
    assert config.kafka.bootstrap_servers == "flag:3"  # flags beat environment and file
    assert config.scorer.max_batch_size == 16  # environment beats the file, string coerced to int
    assert config.kafka.client_id == "from-file"  # the file beats defaults
    assert load_config(path, environ=env).kafka.bootstrap_servers == "env:2"


def test_environment_null_and_json_values() -> None:
    config = load_config(
        None, environ={"INSIGHTLOOP_KAFKA__API_VERSION": "null", "INSIGHTLOOP_SCORER__TORCH_THREADS": "2"}
    )
    assert config.kafka.api_version is None and config.kafka.api_version_tuple() is None
    assert config.scorer.torch_threads == 2


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("kafka:\n  bootstrap_server: x\n", {}, "kafka.bootstrap_server: unknown key"),
        ("scorer:\n  max_batch_size: lots\n", {}, "scorer.max_batch_size"),
        ("scorer:\n  max_batch_size: 0\n", {}, "scorer.max_batch_size"),
        ("kafka:\n  api_version: two\n", {}, "kafka.api_version"),
        ("kafka:\n  security_protocol: TLS\n", {}, "kafka.security_protocol"),
        ("nonsense:\n  a: 1\n", {}, "nonsense: unknown key"),
        ("", {"INSIGHTLOOP_API__HTTP_PORT": "99999"}, "api.http_port"),
        ("", {"INSIGHTLOOP_SCORER": "x"}, "INSIGHTLOOP_SCORER"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], named: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ=env)
    assert named in str(error.value)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad, environ={})


def test_starter_config_is_commented_and_loads_to_the_defaults(tmp_path: Path) -> None:
    text = starter_config()
    assert text.count("\n  # ") >= len(Config.model_fields["kafka"].annotation.model_fields)  # type: ignore[union-attr]
    path = tmp_path / "starter.yaml"
    path.write_text(text)
    assert yaml.safe_load(text)["kafka"]["api_version"] == "2.5"
    assert load_config(path, environ={}) == load_config(None, environ={})


def test_docs_configuration_reference_is_current() -> None:
    on_disk = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert on_disk.strip() == config_reference_markdown().strip(), (
        "docs/configuration.md is stale: regenerate it with `insightloop init --reference > docs/configuration.md`"
    )
