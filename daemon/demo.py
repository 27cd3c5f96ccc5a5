"""`insightloop demo`: the whole loop on one machine, narrated.

Embedded broker → first model (cached) → daemon with every role → a stream that drifts, labels late →
insight → retraining job → candidate vs champion → approval (printed command and page; ``--yes``
approves) → hot swap → quality on the drifted traffic before and after → summary with every report.

``--task ner`` runs the same loop with a named-entity recogniser on the generated news scenario of
:mod:`~insightloop.daemon.entity_scenario`; quality is entity-level micro F1 instead of accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insightloop.daemon.broker import EmbeddedBroker, free_port
from insightloop.daemon.config import load_config
from insightloop.daemon.entity_scenario import write_entity_scenario
from insightloop.daemon.errors import ExitCode, InsightloopError
from insightloop.daemon.replay import replay
from insightloop.daemon.scenario import write_scenario
from insightloop.daemon.task_option import add_task_option
from insightloop.deploy import TOKEN_TASK, Registry, Task, VersionRecord, VersionStatus
from insightloop.retrain import RECENT, FineTuneSettings, default_base_model


@dataclass(frozen=True)
class DemoTask:
    """What differs between the text-classification demo and the entity demo."""

    task: Task
    scenario: Callable[[Path], tuple[Path, Path]]
    story: str  # the built-in scenario in one line
    quality: str  # what "better" means, as printed
    validation_metric: str  # the first model's metric of it, in the version record
    gate_metric: str  # the candidate evaluation row of it
    epochs: int
    learning_rate: float  # of the packaged MiniLM; a --base model gets 2e-3


TEXT_DEMO = DemoTask(
    task="text-classification",
    scenario=write_scenario,
    story="book reviews before the change, kitchen-product reviews after it",
    quality="accuracy",
    validation_metric="validation_accuracy",
    gate_metric="accuracy",
    epochs=2,
    learning_rate=5e-5,
)
ENTITY_DEMO = DemoTask(
    task=TOKEN_TASK,
    scenario=write_entity_scenario,
    story="world-desk news before the change (people, capitals, ministries); then the markets and sports desk, "
    "whose companies and clubs are named after people and towns",
    quality="entity micro F1",
    validation_metric="validation_entity_micro_f1",
    gate_metric="entity_micro_f1",
    epochs=3,
    learning_rate=1e-4,
)


def demo_task(task: Task) -> DemoTask:
    """The demo of ``task``."""
    return ENTITY_DEMO if task == TOKEN_TASK else TEXT_DEMO


def add_demo_parser(commands: Any) -> None:
    """Register `demo`."""
    demo = commands.add_parser("demo", help="run the whole loop on a built-in drifting stream, narrated")
    demo.add_argument("--yes", action="store_true", help="approve a candidate that passes the gate without asking")
    add_task_option(demo, "text-classification (reviews), or ner: a named-entity recogniser on generated news")
    demo.add_argument(
        "--data",
        type=Path,
        help="your own training data (JSON Lines with text and label; for ner CoNLL or NER JSON Lines)",
    )
    demo.add_argument("--stream", type=Path, help="your own stream that drifts (in the shape of --data)")
    demo.add_argument(
        "--after",
        type=int,
        default=300,
        help="texts at the end of the stream kept for after the promotion (default 300)",
    )
    demo.add_argument("--workdir", type=Path, default=Path("insightloop-demo"), help="where everything goes")
    demo.add_argument("--base", help="base model (default: the packaged all-MiniLM-L6-v2)")
    demo.add_argument("--epochs", type=int, help="fine-tuning epochs (default: 2 for text, 3 for ner)")
    demo.add_argument("--max-length", type=int, default=64)
    demo.add_argument("--rate", type=float, default=150.0, help="texts per second replayed")
    demo.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")


def say(message: str) -> None:
    """One narrated line."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def bars() -> bool:
    """Redrawn progress bars only on a terminal; a log or a CI job gets periodic lines instead."""
    return sys.stdout.isatty()


FIRST_TICK_S = 5.0


class Ticker:
    """Says ``what()`` every ``every_s`` seconds until stopped: progress as lines, for output that is not a terminal."""

    def __init__(self, what: Callable[[], str], every_s: float = 15.0) -> None:
        self._what = what
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-ticker", daemon=True)

    def __enter__(self) -> Ticker:
        if not bars():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        last, quiet = "", 0
        # A first sign of life soon, however long the interval: a fast machine may finish before one interval.
        wait_s = min(self._every_s, FIRST_TICK_S)
        while not self._stop.wait(wait_s):
            wait_s = self._every_s
            line = self._what()
            quiet += 1
            if line != last or quiet >= 4:  # news at once; otherwise a sign of life now and then
                say(line)
                last, quiet = line, 0


@dataclass
class Story:
    """What happened, for the summary."""

    insights: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, str] = field(default_factory=dict)
    candidate: VersionRecord | None = None
    promoted: str | None = None
    reports: list[str] = field(default_factory=list)


def _first_model(args: argparse.Namespace, demo: DemoTask, before: Path, workdir: Path) -> Path:
    """Train (or reuse from the cache) the first model; return a fresh registry holding it."""
    from insightloop.daemon.train import train_first_model, train_first_tagger

    base = args.base or default_base_model()
    epochs = args.epochs or demo.epochs
    setting = f"{demo.task}|{base}|{epochs}|{args.max_length}"
    key = hashlib.sha256(before.read_bytes() + setting.encode()).hexdigest()[:12]
    cached = workdir / "cache" / f"first-model-{key}"
    if Registry(cached).production() is None:
        say(f"training the first model on {before} (base {Path(base).name}; cached for the next run) …")
        shutil.rmtree(cached, ignore_errors=True)
        settings = FineTuneSettings(
            epochs=epochs,
            max_length=args.max_length,
            batch_size=16,
            learning_rate=demo.learning_rate if args.base is None else 2e-3,
            seed=0,
        )
        train = train_first_tagger if demo.task == TOKEN_TASK else train_first_model
        started = time.monotonic()
        with Ticker(lambda: f"  still training the first model ({time.monotonic() - started:.0f} s) …", 30.0):
            train(before, cached, base, settings, promote=True, progress=bars(), profile_rounds=100)
    else:
        say(f"using the cached first model ({cached})")
    run_registry = workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}" / "registry"
    shutil.copytree(cached, run_registry)
    return run_registry


def _evaluation_table(record: VersionRecord, per_type: bool) -> list[str]:
    """Champion against candidate on every data set; ``per_type`` adds an entity recogniser's F1 per type."""
    sections = record.evaluation.sections if record.evaluation else []
    rows = [(s.name, r) for s in sections for r in [*s.rows, *(s.per_class if per_type else [])]]
    width = max([9, *(len(r.metric) for _, r in rows)])
    lines = [f"  {'data set':<44} {'metric':<{width}} {'champion':>9} {'candidate':>10} {'Δ':>8}  95% CI of Δ"]
    for name, row in rows:
        lines.append(
            f"  {name[:44]:<44} {row.metric:<{width}} {row.champion or 0:>9.4f} "
            f"{row.candidate or 0:>10.4f} {row.delta or 0:>+8.4f}  "
            f"[{row.ci_low or 0:+.4f}, {row.ci_high or 0:+.4f}] n={row.n}"
        )
    return lines


def _quality(store: Any, demo: DemoTask, version: str, ids: set[str]) -> tuple[float | None, int]:
    """The demo's quality (accuracy, or entity micro F1) of ``version`` on the labeled texts of ``ids``."""
    rows = [r for r in store.recent_records(100_000, model_version=version, labeled_only=True) if r.id in ids]
    if not rows:
        return None, 0
    if demo.task != TOKEN_TASK:
        return sum(r.predicted == r.label for r in rows) / len(rows), len(rows)
    from insightloop.daemon.monitor import entity_window_from_records
    from insightloop.retrain import entity_report

    window = entity_window_from_records(rows)
    labeled = window.labeled
    gold = [window.gold_tags[i] or [] for i in labeled]
    return entity_report(gold, [window.predicted_tags[i] for i in labeled]).micro.f1, len(labeled)


def _stream_ids(demo: DemoTask, stream: Path) -> list[str]:
    """The ids of the stream's labeled texts, in order, as replay sends them."""
    from insightloop.retrain import read_jsonl, read_tagged

    if demo.task == TOKEN_TASK:
        sentences = read_tagged(stream)
        if not all(s.tags for s in sentences):
            raise InsightloopError(f"{stream}: every sentence of the demo's stream needs its labels")
        return [s.id for s in sentences]
    return [e.id or f"{stream.stem}-{i}" for i, e in enumerate(read_jsonl(stream, require_label=True))]


def run_demo(args: argparse.Namespace) -> int:
    """The narrated loop; returns the exit code."""
    demo = demo_task(args.task)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if (args.data is None) != (args.stream is None):
        raise InsightloopError("--data and --stream go together")
    if args.data is None:
        before, stream = demo.scenario(workdir / ("entity-scenario" if demo.task == TOKEN_TASK else "scenario"))
        say(f"built-in scenario: {demo.story}")
    else:
        before, stream = args.data, args.stream
    stream_ids = _stream_ids(demo, stream)
    post = min(args.after, len(stream_ids) // 3)
    pre = len(stream_ids) - post
    registry_root = _first_model(args, demo, before, workdir)
    registry = Registry(registry_root)
    v1 = registry.production() or ""
    token = secrets.token_urlsafe(24)
    with EmbeddedBroker(port=free_port()) as broker:
        http_port = free_port()
        config = load_config(
            None,
            {
                "kafka": {
                    "bootstrap_servers": broker.bootstrap_servers,
                    "session_timeout_ms": 6000,
                    "heartbeat_interval_ms": 1000,
                },
                "registry": {"path": str(registry_root)},
                "state": {"dir": str(registry_root.parent / "state")},
                "api": {"host": "127.0.0.1", "http_port": http_port, "approval_token": token},
                "scorer": {"max_wait_ms": 50},
                # The scenario replays in seconds what production sees in hours, so checks follow the record
                # count alone (no time cap between them), as its story is told in texts.
                "monitor": {
                    "window_size": 300,
                    "min_window": 150,
                    "check_every_records": 150,
                    "check_interval_s": 60,
                    "min_check_interval_s": 0,
                },
                "controller": {
                    "min_new_labels": 200,
                    "cooldown_s": 0,
                    "epochs": args.epochs or demo.epochs,
                    "learning_rate": demo.learning_rate if args.base is None else 2e-3,
                    "poll_s": 2,
                    "profile_rounds": 100,
                    "device": "auto",
                    "gate_min_improvement": 0.02,
                },
            },
            environ={},
        )
        from insightloop.daemon.wiring import build_app

        say(f"embedded broker on {broker.bootstrap_servers}; starting the daemon (scorer, monitor, controller, api)")
        app = build_app(config, "all")
        app.daemon.start()
        try:
            deadline = time.monotonic() + 120
            while not app.daemon.readiness()[0]:
                if time.monotonic() > deadline or app.daemon.stop_event.is_set():
                    raise InsightloopError("the daemon did not become ready")
                time.sleep(0.3)
            url = f"http://127.0.0.1:{app.api.port}"
            say(f"daemon ready: {url}/metrics  {url}/approvals  (serving {v1})")
            story = Story()
            feeder = threading.Thread(
                target=replay,
                args=(config, stream),
                name="demo-replay",
                daemon=True,
                kwargs={
                    "rate": args.rate,
                    "labels_delay": 30,
                    "limit": pre,
                    "progress": bars(),
                    "task": demo.task,
                },
            )
            say(f"replaying {pre} texts of the stream (labels arrive 30 texts late) …")
            feeder.start()
            with Ticker(lambda: f"  {_scored(app)} texts scored so far"):
                code = _narrate(args, app, registry, story, url, token, time.monotonic() + args.timeout)
            feeder.join()
            if code != ExitCode.OK or story.promoted is None:
                _summary(demo, story, registry, app, None, None, stream_ids, pre)
                return int(code)
            say(f"replaying the last {post} texts to the new model …")
            with Ticker(lambda: f"  {_scored(app)} texts scored so far"):
                replay(config, stream, rate=args.rate, labels_delay=30, skip=pre, progress=bars(), task=demo.task)
            late_ids = set(stream_ids[pre:])
            deadline = time.monotonic() + 120
            while _joined(app.store, story.promoted, late_ids) < post * 0.9 and time.monotonic() < deadline:
                time.sleep(1)
            _summary(demo, story, registry, app, v1, story.promoted, stream_ids, pre)
            return int(ExitCode.OK)
        finally:
            app.stop()


def _joined(store: Any, version: str, ids: set[str]) -> int:
    """How many of ``ids`` the store holds scored by ``version`` with their labels joined."""
    return sum(r.id in ids for r in store.recent_records(100_000, model_version=version, labeled_only=True))


def _scored(app: Any) -> int:
    return int(app.metrics.registry.get_sample_value("insightloop_texts_scored_total") or 0)


def _serving(app: Any, version: str) -> bool:
    """Whether the scorer serves ``version`` (its model-version gauge says so)."""
    return bool(app.metrics.registry.get_sample_value("insightloop_model_version_info", {"version": version}) == 1)


def _narrate(
    args: argparse.Namespace, app: Any, registry: Registry, story: Story, url: str, token: str, deadline: float
) -> ExitCode:
    asked = loading = False
    while time.monotonic() < deadline:
        if app.daemon.stop_event.is_set():
            say("the daemon stopped unexpectedly")
            return ExitCode.FAILURE
        for insight in app.store.insights(50):
            if insight["id"] not in story.insights and insight["severity"] in ("warning", "critical"):
                story.insights[insight["id"]] = insight
                say(f"insight [{insight['severity']}] {insight['kind']}: {insight['summary']}")
                say(f"  recommendation: {insight['recommendation']['action']} — {insight['recommendation']['because']}")
                if insight.get("report"):
                    say(f"  report: {insight['report']}")
                    story.reports.append(insight["report"])
        for job in app.store.jobs(20):
            if story.jobs.get(job.id) != job.state:
                story.jobs[job.id] = job.state
                detail = job.error or job.version or job.plan_action or ""
                say(f"retraining job {job.id}: {job.state} {detail}")
        pending = registry.pending_candidates()
        if pending and story.candidate is None:
            story.candidate = pending[-1]
            say(f"candidate {story.candidate.version} evaluated against the champion:")
            for line in _evaluation_table(story.candidate, per_type=args.task == TOKEN_TASK):
                print(line, flush=True)
            gate = story.candidate.gate
            for reason in gate.reasons if gate else []:
                say(f"  gate: {reason}")
            if gate is None or not gate.passed:
                say("the candidate failed the gate: it stays a candidate; production does not change")
                return ExitCode.OK
        if story.candidate is not None and registry.production() == story.candidate.version:
            # Promotion moves the registry pointer; the scorer keeps serving the old version until the new
            # one is loaded and its numerics measured, so the rest of the stream waits for the swap.
            if _serving(app, story.candidate.version):
                story.promoted = story.candidate.version
                say(f"{story.promoted} is in production; the scorer swapped between batches")
                return ExitCode.OK
            if not loading:
                loading = True
                say(f"{story.candidate.version} is promoted; the scorer is loading it …")
        if story.candidate is not None and not asked:
            asked = True
            version = story.candidate.version
            say(f"waiting for approval of {version}. Approve with:")
            print(f"    insightloop models approve {version} --by $USER --registry {registry.root}", flush=True)
            print(f"    or open {url}/approvals (token: {token})", flush=True)
            if args.yes:
                say("--yes: approving")
                app.models.approve(version, by="demo --yes", note="approved by insightloop demo --yes")
        time.sleep(1)
    say("timed out")
    return ExitCode.FAILURE


def _summary(
    demo: DemoTask,
    story: Story,
    registry: Registry,
    app: Any,
    v1: str | None,
    v2: str | None,
    stream_ids: list[str],
    pre: int,
) -> None:
    print("\n== summary ==", flush=True)
    print(f"insights raised: {len(story.insights)}; retraining jobs: {len(story.jobs)}", flush=True)
    first = registry.get(v1).metrics.get(demo.validation_metric) if v1 else None
    if first is not None:
        print(f"first model {v1}: validation {demo.quality} {first:.3f} (held-out training-domain texts)", flush=True)
    if story.candidate is not None:
        recent = next(
            (
                s
                for s in (story.candidate.evaluation.sections if story.candidate.evaluation else [])
                if s.name == RECENT
            ),
            None,
        )
        quality = next((r for r in recent.rows if r.metric == demo.gate_metric), None) if recent else None
        if quality:
            print(
                f"candidate {story.candidate.version} on held-out recent traffic: {demo.quality} "
                f"{quality.champion:.3f} → {quality.candidate:.3f}",
                flush=True,
            )
    if v1 and v2:
        drifted = set(stream_ids[pre // 2 : pre])
        late = set(stream_ids[pre:])
        before, n_before = _quality(app.store, demo, v1, drifted)
        after, n_after = _quality(app.store, demo, v2, late)
        if before is not None and after is not None:
            print(
                f"{demo.quality} on drifted traffic: {before:.3f} with {v1} (n={n_before}) → {after:.3f} with {v2} "
                f"(n={n_after})",
                flush=True,
            )
    paths = list(story.reports)
    for version in filter(None, (story.candidate.version if story.candidate else None,)):
        paths += [str(p) for p in sorted((registry.path_of(version) / "evaluation").glob("*.html"))]
    paths += [str(p) for p in sorted(Path(app.store.directory / "reports").glob("*.html"))][-4:]
    print("reports:", flush=True)
    for path in dict.fromkeys(paths):
        print(f"  {path}", flush=True)
    print(f"registry: {registry.root}", flush=True)
    if story.promoted is None and story.candidate is not None and story.candidate.status == VersionStatus.CANDIDATE:
        print("production did not change.", flush=True)
    sys.stdout.flush()
