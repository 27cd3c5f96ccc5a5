"""The `insightloop` command. Names and flags follow ARCHITECTURE.md's CLI contract."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from insightloop.daemon.config import Config, config_reference_markdown, load_config, starter_config
from insightloop.daemon.errors import ExitCode, InsightloopError
from insightloop.daemon.task_option import add_task_option

log = logging.getLogger("insightloop")


def _add_common(parser: argparse.ArgumentParser, kafka: bool = False, state: bool = False) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (default: built-in defaults)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    if kafka:
        parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (host:port,...)")
    if state:
        parser.add_argument("--registry", type=Path, help="model registry directory")
        parser.add_argument("--state-dir", type=Path, help="state directory")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="insightloop",
        description="Keep a text model healthy in production: score, watch, retrain, evaluate, promote.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser("broker", help="run the embedded Kafka-protocol broker on 127.0.0.1")
    broker.add_argument("--port", type=int, default=9092, help="port to listen on (default 9092)")
    _add_common(broker)

    init = commands.add_parser("init", help="write a commented starter config")
    init.add_argument("--path", type=Path, default=Path("insightloop.yaml"), help="where to write it")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--reference", action="store_true", help="print the configuration reference (Markdown) instead")

    train = commands.add_parser("train", help="fine-tune a first model and register it")
    train.add_argument(
        "--data",
        type=Path,
        required=True,
        help="JSON Lines with text and label; for --task token-classification a CoNLL file or NER JSON Lines",
    )
    add_task_option(train, "one label per text, or one tag per word (named entities; also: ner)")
    train.add_argument("--registry", type=Path, required=True, help="model registry directory")
    train.add_argument("--base", help="base model: a directory or name (default: packaged all-MiniLM-L6-v2)")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--max-length", type=int, default=128)
    train.add_argument(
        "--truncation",
        choices=["head", "head_tail", "chunks"],
        default="head",
        help="how texts past --max-length are cut: their beginning, their beginning and end (long reviews), "
        "or not at all (chunks: overlapping windows whose scores are averaged)",
    )
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--learning-rate", type=float, default=5e-5)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    train.add_argument(
        "--promote",
        action="store_true",
        help="approve and promote the new version as `models approve` does: smoke test, audit log entries, "
        "production pointer moved atomically, `models` event on the configured broker. If no broker answers "
        "within 5 s the promotion still stands (audited) and scorers pick it up by polling the registry pointer",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    train.add_argument("--config", type=Path, help="YAML config file (Kafka settings for --promote's event)")
    train.add_argument("--bootstrap-servers", help="Kafka bootstrap servers for --promote's event (host:port,...)")

    run = commands.add_parser("run", help="run the daemon")
    _add_common(run, kafka=True, state=True)
    run.add_argument(
        "--role",
        choices=["all", "scorer", "monitor", "controller", "api"],
        default="all",
        help="which workers to run (the HTTP endpoints always run)",
    )
    run.add_argument("--http-port", type=int, help="HTTP port for /metrics, /healthz, /readyz")

    replay = commands.add_parser("replay", help="produce a JSON Lines file into the texts topic")
    replay.add_argument("file", type=Path, metavar="FILE.jsonl")
    replay.add_argument("--rate", type=float, help="texts per second (default: as fast as possible)")
    replay.add_argument("--labels-delay", type=int, default=0, help="send each label this many texts after its text")
    replay.add_argument("--limit", type=int, help="stop after this many texts")
    replay.add_argument("--skip", type=int, default=0, help="start after this many rows of the file")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_task_option(
        replay,
        "token-classification (or ner): FILE is CoNLL or NER JSON Lines; sentences go out as raw text, labels "
        "as character entities (default: the task of the registry's production version, else text-classification)",
        default=None,
    )
    _add_common(replay, kafka=True, state=True)

    retrain = commands.add_parser("retrain", help="run one retraining job (what the runners execute)")
    retrain.add_argument("--spec", type=Path, required=True, help="job spec (JSON) written by the controller")
    retrain.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)

    from insightloop.daemon.check_cmd import add_check_parser
    from insightloop.daemon.models_cmd import add_models_parser

    add_check_parser(commands)
    from insightloop.daemon.demo import add_demo_parser

    add_demo_parser(commands)

    add_models_parser(commands, _add_common)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            out.setdefault(section, {})[key] = value

    put("kafka", "bootstrap_servers", getattr(args, "bootstrap_servers", None))
    put("registry", "path", getattr(args, "registry", None))
    put("state", "dir", getattr(args, "state_dir", None))
    put("api", "http_port", getattr(args, "http_port", None))
    put("logging", "level", getattr(args, "log_level", None))
    return out


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None), _overrides(args))


def _setup_logging(config: Config) -> None:
    from insightloop.daemon.logs import setup_logging

    setup_logging(config.logging.level, config.logging.json_format)


def cmd_broker(args: argparse.Namespace) -> int:
    """Run the embedded broker until Ctrl-C or SIGTERM."""
    from insightloop.daemon.broker import EmbeddedBroker
    from insightloop.daemon.kafka import ensure_topics

    config = _config(args)
    _setup_logging(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port) as broker:
        kafka = config.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
        ensure_topics(kafka, config.topics.all())
        print(
            f"embedded Kafka-protocol broker ready: --bootstrap-servers {broker.bootstrap_servers}",
            flush=True,
        )
        while not stop.wait(0.5):
            if not broker.running:
                log.error("the embedded broker exited unexpectedly")
                return int(ExitCode.FAILURE)
    print("broker stopped", flush=True)
    return int(ExitCode.OK)


def cmd_init(args: argparse.Namespace) -> int:
    """Write the starter config (or print the reference)."""
    if args.reference:
        print(config_reference_markdown())
        return int(ExitCode.OK)
    if args.path.exists() and not args.force:
        print(f"error: {args.path} exists; use --force to overwrite", file=sys.stderr)
        return int(ExitCode.USAGE)
    args.path.write_text(starter_config(), encoding="utf-8")
    print(f"wrote {args.path}")
    return int(ExitCode.OK)


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune a first model; the last line printed is the new version's directory."""
    from insightloop.daemon.logs import setup_logging
    from insightloop.daemon.train import train_first_model, train_first_tagger
    from insightloop.retrain import FineTuneSettings

    setup_logging(args.log_level or "INFO")
    try:
        settings = FineTuneSettings(
            epochs=args.epochs,
            max_length=args.max_length,
            truncation=args.truncation,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            device=args.device,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    publish = None
    if args.promote:
        from insightloop.daemon.models_cmd import publisher_for
        from insightloop.deploy import ModelEvent

        config = _config(args)  # a bad config fails before the training, not after it

        def publish(event: ModelEvent) -> None:  # connects once the version is promoted, not before training
            send = publisher_for(config)
            if send is not None:
                send(event)

    train = train_first_tagger if args.task == "token-classification" else train_first_model
    path = train(
        args.data, args.registry, args.base, settings, args.promote, progress=not args.no_progress, publish=publish
    )
    print(path, flush=True)
    return int(ExitCode.OK)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon's workers until SIGTERM/SIGINT."""
    from insightloop.daemon.wiring import build_app

    config = _config(args)
    _setup_logging(config)
    app = build_app(config, args.role)
    daemon, api = app.daemon, app.api
    daemon.install_signal_handlers()
    log.info("insightloop %s starting (role %s, pid %d, http port %d)", _version(), args.role, os.getpid(), api.port)
    return app.run_until_stopped()


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a file into Kafka."""
    from insightloop.daemon.replay import production_task, replay

    config = _config(args)
    _setup_logging(config)
    task = args.task or production_task(config)
    result = replay(
        config,
        args.file,
        rate=args.rate,
        labels_delay=args.labels_delay,
        limit=args.limit,
        skip=args.skip,
        progress=not args.no_progress,
        task=task,
    )
    print(f"replayed {result.texts} texts and {result.labels} labels in {result.seconds:.1f} s")
    return int(ExitCode.OK)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("insightloop")
    except PackageNotFoundError:
        return "dev"


def cmd_retrain(args: argparse.Namespace) -> int:
    """Run a retraining job; the last line printed is its result (JSON)."""
    from insightloop.daemon.logs import setup_logging
    from insightloop.retrain import run_spec_file

    setup_logging(args.log_level or "INFO")
    try:
        result = run_spec_file(args.spec)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.DATA_ERROR)
    except Exception as exc:
        log.exception("retraining job failed")
        print(f"error: retraining job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    print(result.model_dump_json(), flush=True)
    return int(ExitCode.OK)


def cmd_check(args: argparse.Namespace) -> int:
    """Offline check of a current file against a reference file."""
    from insightloop.daemon.check_cmd import run_check
    from insightloop.daemon.logs import setup_logging

    setup_logging(args.log_level or "WARNING")
    return run_check(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """The narrated loop."""
    from insightloop.daemon.demo import run_demo
    from insightloop.daemon.logs import setup_logging

    setup_logging("ERROR")  # the demo narrates; the daemon's own log lines would repeat it
    return run_demo(args)


def cmd_models(args: argparse.Namespace) -> int:
    """List, show, approve, reject, roll back."""
    from insightloop.daemon.models_cmd import run_models

    config = _config(args)
    _setup_logging(config)
    return run_models(args, config)


COMMANDS = {
    "broker": cmd_broker,
    "init": cmd_init,
    "train": cmd_train,
    "run": cmd_run,
    "replay": cmd_replay,
    "models": cmd_models,
    "retrain": cmd_retrain,
    "check": cmd_check,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `insightloop` console script."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently sends no telemetry
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InsightloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # map the library errors we know to clear messages and named codes
        return _report_known(exc)


def _report_known(exc: Exception) -> int:
    code = exit_code_for(exc)
    if code is None:
        raise exc  # not one of ours: a bug, and its traceback is what a person needs
    print(f"error: {exc}", file=sys.stderr)
    return int(code)


def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The exit code for an error a room raised on purpose, by its kind; None for anything else.

    Specific errors keep their named codes (a bad data file, no usable model); otherwise a temporary
    error exits with ``TEMPORARY_FAILURE`` (a wrapper may retry) and a permanent one with ``FAILURE``.
    """
    from insightloop.deploy import DeployError, DeployTemporaryError, ModelLoadError, RegistryError
    from insightloop.detectors import DetectorError, DetectorTemporaryError
    from insightloop.retrain import DataFileError, RetrainError, RetrainTemporaryError

    if isinstance(exc, InsightloopError):
        return exc.exit_code
    if isinstance(exc, DataFileError):
        return ExitCode.DATA_ERROR
    if isinstance(exc, ModelLoadError | RegistryError):
        return ExitCode.NO_MODEL
    if isinstance(exc, DeployTemporaryError | RetrainTemporaryError | DetectorTemporaryError):
        return ExitCode.TEMPORARY_FAILURE
    if isinstance(exc, DeployError | RetrainError | DetectorError):
        return ExitCode.FAILURE
    return None


if __name__ == "__main__":
    sys.exit(main())
