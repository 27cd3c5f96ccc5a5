"""daemon: the process — CLI, config, lifecycle, Kafka edge, scorer, HTTP API."""

from insightloop.daemon.config import Config, load_config
from insightloop.daemon.errors import ConfigError, ExitCode, InsightloopError, PermanentError, TemporaryError
from insightloop.daemon.events import DeadLetter, LabelEvent, PredictionEvent, RejectReason, TextEvent

__all__ = [
    "Config",
    "ConfigError",
    "DeadLetter",
    "ExitCode",
    "InsightloopError",
    "LabelEvent",
    "PermanentError",
    "PredictionEvent",
    "RejectReason",
    "TemporaryError",
    "TextEvent",
    "load_config",
]
