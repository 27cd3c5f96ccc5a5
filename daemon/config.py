"""Configuration: each setting declared once (type, default, docstring), layered
defaults → YAML file → ``INSIGHTLOOP_<SECTION>__<KEY>`` environment variables → CLI flags.

Parsed once in ``main`` and passed down; nothing here reads the environment at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from insightloop.daemon.errors import ConfigError

ENV_PREFIX = "INSIGHTLOOP_"
ENV_NESTING = "__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KafkaConfig(_Section):
    """How to reach Kafka. The same keys work for the embedded broker and a real cluster."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers.")
    api_version: str | None = Field(
        "2.5",
        description="Kafka protocol version to pin, e.g. '2.5' (needed for consumer groups on the "
        "embedded broker); null lets the client probe the broker.",
    )
    client_id: str = Field("insightloop", description="Client id reported to the brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Transport security towards the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: str | None = Field(
        None, repr=False, description="SASL password; prefer the environment variable or a mounted Secret."
    )
    ssl_cafile: str | None = Field(None, description="CA bundle to verify the brokers' certificates.")
    ssl_certfile: str | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: str | None = Field(None, description="Client private key for mutual TLS.")
    ssl_check_hostname: bool = Field(True, description="Check that broker certificates match host names.")
    session_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        description="Consumer group session timeout; a dead scorer's partitions move after this long.",
    )
    heartbeat_interval_ms: int = Field(
        3_000, ge=100, description="Consumer heartbeat interval; keep under a third of the session timeout."
    )
    request_timeout_ms: int = Field(30_000, ge=1_000, description="Timeout of one request to a broker.")
    bootstrap_timeout_ms: int = Field(
        30_000, ge=500, description="How long a client tries to reach the bootstrap servers before giving up."
    )
    topic_partitions: int = Field(
        4, ge=1, description="Partitions for topics insightloop creates (the most scorers that share work)."
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor for topics insightloop creates.")
    create_topics: bool = Field(True, description="Create missing topics at start-up.")

    @field_validator("api_version")
    @classmethod
    def _api_version_is_dotted(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split(".")
            if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
                raise ValueError("must look like '2.5' or '3.9.0', or be null")
        return value

    def api_version_tuple(self) -> tuple[int, ...] | None:
        """The API version as kafka-python wants it, or None to probe."""
        return None if self.api_version is None else tuple(int(p) for p in self.api_version.split("."))


class TopicsConfig(_Section):
    """Topic names; the defaults are ARCHITECTURE.md's."""

    texts: str = Field("insightloop.texts", description="Production texts to score.")
    predictions: str = Field("insightloop.predictions", description="Where the scorer writes predictions.")
    labels: str = Field("insightloop.labels", description="Delayed ground truth from users.")
    insights: str = Field("insightloop.insights", description="Insights raised by the monitor.")
    models: str = Field("insightloop.models", description="Promote/rollback events.")
    deadletter: str = Field("insightloop.deadletter", description="Rejected input, with a reason.")

    def all(self) -> list[str]:
        """Every topic name, in a stable order."""
        return [self.texts, self.predictions, self.labels, self.insights, self.models, self.deadletter]


class ScorerConfig(_Section):
    """The scorer role: micro-batches from the texts topic to the predictions topic."""

    group_id: str = Field("insightloop-scorer", description="Consumer group shared by all scorer replicas.")
    max_batch_size: int = Field(64, ge=1, le=4096, description="Most texts scored in one micro-batch.")
    max_wait_ms: int = Field(
        100, ge=0, description="Longest wait for a micro-batch to fill after its first text arrives."
    )
    max_message_bytes: int = Field(1_000_000, ge=64, description="Larger input messages go to the dead-letter topic.")
    inference_batch_size: int = Field(
        32,
        ge=1,
        description="Texts per forward pass on a CPU; a micro-batch is split by length into such chunks. On CUDA "
        "a micro-batch is one pass: raise max_batch_size to 256-512 there (docs/benchmarks.md).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' takes CUDA when present.")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads for inference; null means the CPUs this process may use."
    )
    quantize: bool | Literal["auto"] = Field(
        "auto",
        description="int8 scoring on CPU with ONNX Runtime (encoder matrices per channel, head in float32): true, "
        "false, or 'auto' (a candidate measured at load, kept when it is fastest and its labels agree with "
        "float32; docs/benchmarks.md). The graph runs in one single-thread session per core (up to 4), each taking "
        "its share of a pass. A model that cannot be exported scores with the torch paths.",
    )
    cpu_bf16: bool | Literal["auto"] = Field(
        "auto",
        description="bf16 autocast on CPU: true, false, or 'auto' (a candidate measured at load where the CPU has "
        "native bf16, AMX or AVX-512 BF16). Scores shift slightly; the monitor re-scores a version's reference "
        "rows with the numerics that serve it, so checks compare like with like. CUDA always uses bf16.",
    )
    numerics_trial_texts: int = Field(
        128,
        ge=8,
        le=4096,
        description="Reference texts of the version every CPU candidate (float32, bf16, int8) scores at load to "
        "be timed and compared.",
    )
    numerics_min_agreement: float = Field(
        0.98,
        gt=0,
        le=1,
        description="A candidate is kept only when its labels agree with float32 on at least this share of the "
        "trial texts.",
    )
    numerics_min_speedup: float = Field(
        1.1, ge=1, description="…and when it is at least this many times as fast as float32 on them."
    )
    drain_timeout_s: float = Field(
        20.0, gt=0, description="On SIGTERM, how long the batch in flight may take to finish and commit."
    )
    model_poll_s: float = Field(
        10.0,
        gt=0,
        description="How often a scorer also checks the registry's production pointer "
        "(models events make swaps immediate; this catches a missed event).",
    )
    retry_backoff_s: float = Field(
        1.0, gt=0, description="First wait before retrying a failed produce or commit (doubles, max 30 s)."
    )
    max_dead_letter_bytes: int = Field(
        32_768,
        ge=1024,
        description="Largest dead letter the scorer sends (the reason and the raw excerpt are shortened to fit); "
        "keep it well below the broker's message.max.bytes.",
    )
    stuck_batch_s: float = Field(
        120.0,
        gt=0,
        description="A micro-batch whose outputs are still not acknowledged after this long makes /readyz false "
        "(the broker refuses or is away); it turns true again once the batch is committed.",
    )
    lag_report_s: float = Field(
        5.0,
        gt=0,
        description="How often consumer lag is reported while a batch waits for the broker (it is also reported "
        "after every poll).",
    )


class MonitorConfig(_Section):
    """The monitor role: joins texts, predictions and late labels; runs the detectors on a schedule."""

    group_id: str = Field("insightloop-monitor", description="The monitor's own consumer group.")
    window_size: int = Field(
        300,
        ge=50,
        description="Newest scored texts in the current window of a check (small enough that a change fills much of "
        "it within a few hundred texts; the false-alarm budget holds at any size).",
    )
    min_window: int = Field(200, ge=20, description="A check needs at least this many scored texts.")
    check_interval_s: float = Field(300.0, gt=0, description="Run a check at least this often (APScheduler).")
    check_every_records: int = Field(
        100, ge=1, description="…and after this many newly scored texts, once min_check_interval_s has passed."
    )
    min_check_interval_s: float = Field(
        5.0,
        ge=0,
        description="A count-triggered check waits until this long after the previous check ended, so that at "
        "high rates checks take a bounded share of the monitor's time (0: after every check_every_records).",
    )
    sample_rate: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of texts the monitor stores and checks, chosen by a stable hash of the text id (a "
        "text, its prediction and its label are kept or dropped together). Below 1 a window spans "
        "~1/sample_rate more texts, so detection takes ~1/sample_rate more texts; see docs/benchmarks.md.",
    )
    min_severity: Literal["info", "warning", "critical"] = Field(
        "warning", description="Insights below this severity are stored but not published."
    )
    false_alarm_budget: int = Field(
        1_000_000,
        ge=1000,
        description="Expected in-distribution texts between two false insights at warning or above, for the whole "
        "monitor at its cadence (every detector, every check): each detector's threshold is set for "
        "check_every_records / false_alarm_budget / detectors per check (Bonferroni; see detectors/README.md).",
    )
    min_accuracy_cost: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Accuracy points: a certain change whose expected accuracy cost (labeled, else estimated) is "
        "below this is an info insight: stored and shown, never published at min_severity warning, paged or "
        "retrained for.",
    )
    critical_accuracy_cost: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Accuracy points: an insight whose expected cost reaches this, with its 95% interval above "
        "min_accuracy_cost, is critical.",
    )
    retention_max_age_s: float = Field(7 * 86400.0, gt=0, description="Joined records older than this are deleted.")
    retention_max_rows: int = Field(200_000, ge=1000, description="At most this many joined records are kept.")
    keep_text: Literal["all", "labeled_only"] = Field(
        "all",
        description="'labeled_only' blanks the stored text of unlabeled records once they are older than "
        "half the retention age (privacy); retraining only needs labeled ones.",
    )
    reports_keep: int = Field(100, ge=1, description="Evidently reports kept under <state>/reports.")
    waiting_labels_max_rows: int = Field(
        10_000,
        ge=1,
        description="Labels whose text has not arrived (yet) wait in a table of their own, at most this many (the "
        "oldest go first); they are joined when their text and prediction arrive and never count against "
        "retention_max_rows.",
    )
    waiting_labels_max_age_s: float = Field(
        86_400.0, gt=0, description="A label whose text has not arrived after this long is dropped."
    )

    @field_validator("critical_accuracy_cost")
    @classmethod
    def _critical_not_below_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_accuracy_cost")
        if low is not None and value < low:
            raise ValueError(f"must be at least min_accuracy_cost ({low:g})")
        return value


class ControllerConfig(_Section):
    """The controller role: turns insights into retraining jobs, tracks them, registers candidates."""

    group_id: str = Field("insightloop-controller", description="The controller's consumer group on insights.")
    runner: Literal["local", "kubernetes"] = Field("local", description="Where retraining jobs run.")
    min_severity: Literal["info", "warning", "critical"] = Field("warning", description="Lowest severity acted on.")
    kinds: list[str] = Field(
        default_factory=lambda: [
            "text_drift",
            "embedding_drift",
            "prediction_drift",
            "quality_drop",
            "estimated_quality_drop",
            "slice_degradation",
        ],
        description="Insight kinds that may trigger a job.",
    )
    cooldown_s: float = Field(3600.0, ge=0, description="Least time between two job launches.")
    min_new_labels: int = Field(
        200,
        ge=1,
        description="Labeled production texts scored since the insight began needed before its job starts "
        "(they are the job's production data). An insight begins with the texts no earlier check had seen.",
    )
    max_concurrent_jobs: int = Field(1, ge=1, description="Jobs running at once.")
    gpu_hours_per_day: float = Field(8.0, gt=0, description="Budget of GPU-hours (job wall time × GPUs) per day.")
    gpus_per_job: int = Field(
        1,
        ge=0,
        description="GPUs one job uses (counted in the budget); above 1 a job trains data-parallel, one process "
        "per GPU launched by torchrun, keeping batch_size as the global batch.",
    )
    max_retries: int = Field(1, ge=0, description="A failed job for the same insight is retried this many times.")
    poll_s: float = Field(5.0, gt=0, description="How often job states are polled.")
    job_timeout_s: float = Field(6 * 3600.0, gt=0, description="A job running longer is stopped and failed.")
    reference_data: Path | None = Field(
        None, description="Labeled reference training data (JSONL); default: the champion's own training file."
    )
    production_labeled_max: int = Field(20_000, ge=10, description="Newest labeled production texts a job gets.")
    auto_approve: bool = Field(
        False, description="Promote candidates that pass the gate without a person (development only)."
    )
    epochs: int = Field(3, ge=1, description="Fine-tuning epochs of a job.")
    learning_rate: float = Field(3e-5, gt=0, description="Fine-tuning learning rate.")
    batch_size: int = Field(16, ge=1, description="Fine-tuning batch size.")
    production_weight: float = Field(2.0, gt=0, description="Weight of production examples vs reference ones.")
    production_holdout_share: float = Field(
        0.3, gt=0, lt=1, description="Newest share of labeled production data held out for the gate."
    )
    gate_min_improvement: float = Field(0.01, ge=0, description="Accuracy gain on recent data a candidate needs.")
    gate_max_regression: float = Field(0.03, ge=0, description="Accuracy loss allowed on the reference holdout.")
    ablations: bool | None = Field(
        None,
        description="Test each plan adjustment by experiment: the job also trains a variant with it left out, "
        "records each effect with its interval in the lineage, and the best variant the gate passes becomes the "
        "candidate. Unset: on when the job runs on a GPU.",
    )
    max_ablations: int = Field(3, ge=0, description="Most variants one job trains besides the planned candidate.")
    projection_dims: int = Field(32, ge=1, description="Embedding projection width of candidates.")
    profile_rounds: int = Field(200, ge=0, description="Calibration rounds of a candidate's reference profile.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device of local jobs.")
    job_template: Path | None = Field(
        None, description="Kubernetes Job template (YAML) for the kubernetes runner (the chart mounts one)."
    )
    namespace: str | None = Field(None, description="Namespace of Kubernetes Jobs (default: the pod's own).")

    @model_validator(mode="after")
    def _batch_splits_across_gpus(self) -> ControllerConfig:
        if self.gpus_per_job > 1 and self.batch_size % self.gpus_per_job:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of gpus_per_job {self.gpus_per_job}: "
                f"each GPU trains batch_size / {self.gpus_per_job} rows of every batch"
            )
        return self


class InputConfig(_Section):
    """How the user's messages and data files map onto text and label events.

    Paths are dotted (``payload.body``, ``items.0.text``) or JSON pointers (``/data/text``). The defaults
    read insightloop's own shape, ``{"id", "text", "ts", "meta"}`` and ``{"id", "label"}``; a message the
    mapping cannot read goes to the dead-letter topic with the path that failed. ``replay``, ``check`` and
    ``models import`` read files through the same mapping.
    """

    text: str = Field("text", description="Path of the text to score.")
    id: str | None = Field("id", description="Path of the text's id; null: ids come from the Kafka message key.")
    id_from_key: bool = Field(
        False, description="Take the id from the Kafka message key when the value has none at the id path."
    )
    ts: str | None = Field("ts", description="Path of the event time (optional in each message); null: none.")
    ts_format: str = Field(
        "auto",
        description="Format of the event time: 'auto' (RFC 3339 or epoch milliseconds), 'rfc3339', 'epoch_ms', "
        "'epoch_s', or a strptime pattern such as '%d/%m/%Y %H:%M' (read as UTC unless it has a zone).",
    )
    meta_object: str | None = Field(
        "meta", description="Path of an object whose scalar entries all become meta; null: none."
    )
    meta: list[str] = Field(
        default_factory=list,
        description="Paths of single fields picked into meta, each named by its dotted path (e.g. 'ctx.shop'): "
        "usable as slices.",
    )
    label_id: str | None = Field(
        "id", description="Path of the id in a label message; null: ids come from the Kafka message key."
    )
    label: str = Field("label", description="Path of the label in a label message (and in labeled data files).")

    @field_validator("text", "id", "ts", "meta_object", "label_id", "label")
    @classmethod
    def _is_path(cls, value: str | None) -> str | None:
        from insightloop.daemon.mapping import FieldPath

        if value is not None:
            FieldPath.parse(value)
        return value

    @field_validator("meta")
    @classmethod
    def _are_paths(cls, value: list[str]) -> list[str]:
        from insightloop.daemon.mapping import FieldPath

        for path in value:
            FieldPath.parse(path)
        return value

    @field_validator("ts_format")
    @classmethod
    def _is_ts_format(cls, value: str) -> str:
        from insightloop.daemon.mapping import check_ts_format

        return check_ts_format(value)


class MlflowConfig(_Section):
    """Mirror the registry into an MLflow model registry (needs the [mlflow] extra). Approval stays insightloop's."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server, e.g. http://mlflow:5000; null turns the bridge off. Every version "
        "becomes a version of the registered model, @champion follows production, @challenger the waiting candidate.",
    )
    model_name: str = Field("insightloop", min_length=1, description="Name of the MLflow registered model.")
    sync_interval_s: float = Field(30.0, gt=0, description="Seconds between reconciliations of the registry.")
    retry_max_s: float = Field(
        300.0, gt=0, description="Longest wait between retries while MLflow cannot be reached (backoff doubles)."
    )
    request_timeout_s: float = Field(
        10.0, gt=0, description="Timeout of one request to MLflow (sets MLFLOW_HTTP_REQUEST_TIMEOUT unless set)."
    )


class RegistryConfig(_Section):
    """Where model versions live (a local path or a mounted PVC)."""

    path: Path = Field(Path("insightloop-registry"), description="Registry directory.")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="The MLflow registry bridge.")  # type: ignore[arg-type]


class StateConfig(_Section):
    """Where the daemon keeps state that must survive a restart: SQLite in ``dir`` unless ``url`` names PostgreSQL."""

    dir: Path = Field(
        Path("insightloop-state"),
        description="State directory: the SQLite store (unless url is set), Evidently reports, profile caches.",
    )
    url: str | None = Field(
        None,
        description="PostgreSQL database for the state store instead of SQLite, "
        "postgresql://USER@HOST:PORT/DB (libpq parameters such as ?sslmode=require may follow). "
        "Same schema and migrations as SQLite. Keep the password out of it: use state.password.",
    )
    password: str | None = Field(
        None,
        repr=False,
        description="Password of the state.url user; prefer the environment variable from a Secret. "
        "Given to the database driver only: never logged, never in a child process's environment.",
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, description="How long to wait for the PostgreSQL server when connecting (state.url only)."
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL; leave it empty for SQLite in state.dir")
        return value


class ApiConfig(_Section):
    """The HTTP server: metrics, health, the JSON API, the approvals page."""

    host: str = Field("0.0.0.0", description="Address to listen on.")
    http_port: int = Field(8080, ge=0, le=65535, description="Port to listen on; 0 picks a free one.")
    approval_token: str | None = Field(
        None,
        repr=False,
        min_length=16,
        description="Bearer token with every right: read texts, approve, reject and roll back (name 'operator'); "
        "prefer the environment variable from a Secret. Without any token, those endpoints refuse everyone.",
    )
    tokens_file: Path | None = Field(
        None,
        description="YAML file of named tokens with rights and optional expiry (a mounted Secret); re-read when "
        "its content changes; while it does not parse, none of its tokens authenticate. Entries: {name, token, "
        "rights: [read, approve, reject, rollback], expires_at}. 'read' lets a token read texts (reference rows, "
        "vocabulary, training data, insight examples, reports).",
    )
    max_body_bytes: int = Field(65_536, ge=256, description="Larger request bodies are refused (413).")
    url: str | None = Field(
        None, description="Where people reach this API (shown in messages), e.g. https://insightloop.example."
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "insightloop",
            ".svc",
            ".svc.cluster.local",
        ],
        description="Host header values the API answers (against DNS rebinding): exact names, '.suffix' for a "
        "name and every name under it, '*' for any. Others get 421. /metrics, /healthz and /readyz answer "
        "any Host (Prometheus and the kubelet use the pod's IP). The chart adds its Service and ingress names.",
    )
    socket_timeout_s: float = Field(
        10.0, gt=0, description="A connection that sends nothing for this long is closed (slow or idle clients)."
    )
    max_workers: int = Field(
        16, ge=1, le=1024, description="Threads answering requests; a request arriving when all are busy waits."
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="Open connections held while they wait for their request; beyond, the oldest idle one is "
        "closed (idle connections hold no thread).",
    )
    listen_backlog: int = Field(128, ge=1, description="Connections the kernel queues before the server accepts.")
    report_link_ttl_s: float = Field(
        900.0, gt=0, description="How long a signed report link (made for a token with 'read') can be opened."
    )


class LoggingConfig(_Section):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_format: bool = Field(False, description="One JSON object per log line (for log collectors).")


class Config(_Section):
    """The whole configuration of an insightloop deployment."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)  # type: ignore[arg-type]
    topics: TopicsConfig = Field(default_factory=TopicsConfig)  # type: ignore[arg-type]
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)  # type: ignore[arg-type]
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)  # type: ignore[arg-type]
    controller: ControllerConfig = Field(default_factory=ControllerConfig)  # type: ignore[arg-type]
    registry: RegistryConfig = Field(default_factory=RegistryConfig)  # type: ignore[arg-type]
    state: StateConfig = Field(default_factory=StateConfig)  # type: ignore[arg-type]
    api: ApiConfig = Field(default_factory=ApiConfig)  # type: ignore[arg-type]
    logging: LoggingConfig = Field(default_factory=LoggingConfig)  # type: ignore[arg-type]
    input: InputConfig = Field(default_factory=InputConfig)  # type: ignore[arg-type]


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn INSIGHTLOOP_SECTION__KEY=value variables into a nested dict."""
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTING)]
        if len(path) < 2 or not all(path):
            raise ConfigError(
                f"environment variable {name}: expected {ENV_PREFIX}<SECTION>{ENV_NESTING}<KEY>, "
                f"e.g. {ENV_PREFIX}KAFKA{ENV_NESTING}BOOTSTRAP_SERVERS"
            )
        value: Any = raw
        if raw.strip().lower() == "null":
            value = None
        elif raw.strip().startswith(("[", "{")):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return layer


# Keys whose values are secrets: a configuration error names them but never echoes what was given.
# state.url is among them because a URL may carry a password despite the advice.
SECRET_KEYS = frozenset({"api.approval_token", "kafka.sasl_password", "state.password", "state.url"})


def _format_validation_error(error: ValidationError, origin: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        env_name = ENV_PREFIX + ENV_NESTING.join(str(p).upper() for p in item["loc"])
        given = "(hidden: a secret)" if key in SECRET_KEYS else repr(item.get("input"))
        lines.append(f"  {key}: {message} (got {given}; env {env_name})")
    return f"invalid configuration ({origin}):\n" + "\n".join(lines)


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration from defaults, a YAML file, the environment and CLI overrides."""
    layers: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
        layers = loaded
    env = _env_layer(os.environ if environ is None else environ)
    if env:
        origin += " + environment"
    layers = _deep_merge(layers, env)
    if overrides:
        origin += " + command-line flags"
        layers = _deep_merge(layers, overrides)
    try:
        return Config.model_validate(layers)
    except ValidationError as exc:
        # pydantic's own error repeats every input: not chained when a secret is among them.
        secret = any(".".join(str(p) for p in item["loc"]) in SECRET_KEYS for item in exc.errors())
        raise ConfigError(_format_validation_error(exc, origin)) from (None if secret else exc)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _sections() -> list[tuple[str, type[BaseModel]]]:
    sections = []
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        sections.append((name, annotation))
    return sections


def starter_config() -> str:
    """A commented YAML config with every key at its default, generated from the declarations."""
    out = [
        "# insightloop configuration. Every key can also be set by an environment variable",
        "# INSIGHTLOOP_<SECTION>__<KEY> (e.g. INSIGHTLOOP_KAFKA__BOOTSTRAP_SERVERS);",
        "# command-line flags win over both.",
        "",
    ]
    for name, section in _sections():
        out += [f"# {line.strip()}".rstrip() for line in (section.__doc__ or "").strip().splitlines()]
        out.append(f"{name}:")
        for key, field in section.model_fields.items():
            out += [f"  # {line.strip()}".rstrip() for line in (field.description or "").splitlines()]
            if _is_section(field.annotation):
                out.append(f"  {key}:")
                for sub, subfield in field.annotation.model_fields.items():  # type: ignore[union-attr]
                    out += [f"    # {line.strip()}".rstrip() for line in (subfield.description or "").splitlines()]
                    out.append(f"    {sub}: {_yaml_scalar(subfield.get_default(call_default_factory=True))}")
                continue
            default = field.get_default(call_default_factory=True)
            out.append(f"  {key}: {_yaml_scalar(default)}")
        out.append("")
    return "\n".join(out)


def config_reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from the declarations."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `daemon/config.py` by `insightloop init --reference`.",
        "",
    ]
    for name, section in _sections():
        out += [f"## `{name}`", "", (section.__doc__ or "").strip(), ""]
        out += ["| key | default | environment variable | meaning |", "|---|---|---|---|"]
        for key, field in section.model_fields.items():
            if _is_section(field.annotation):  # a nested section: one row per key, e.g. registry.mlflow.tracking_uri
                for sub, subfield in field.annotation.model_fields.items():  # type: ignore[union-attr]
                    default = _yaml_scalar(subfield.get_default(call_default_factory=True))
                    env = ENV_PREFIX + ENV_NESTING.join(p.upper() for p in (name, key, sub))
                    out.append(f"| `{name}.{key}.{sub}` | `{default}` | `{env}` | {subfield.description} |")
                continue
            default = _yaml_scalar(field.get_default(call_default_factory=True))
            env = f"{ENV_PREFIX}{name.upper()}{ENV_NESTING}{key.upper()}"
            out.append(f"| `{name}.{key}` | `{default}` | `{env}` | {field.description} |")
        out.append("")
    return "\n".join(out)
