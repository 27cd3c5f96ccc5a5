"""`insightloop demo`: the whole loop on one machine, narrated.

Embedded broker → first model (cached) → daemon with every role → a stream that drifts, labels late →
insight → retraining job → candidate vs champion → approval (printed command and page; ``--yes``
approves) → hot swap → accuracy on the drifted traffic before and after → summary with every report.
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
from insightloop.daemon.errors import ExitCode, InsightloopError
from insightloop.daemon.replay import replay
from insightloop.daemon.scenario import write_scenario
from insightloop.deploy import Registry, VersionRecord, VersionStatus
from insightloop.retrain import RECENT, FineTuneSettings, default_base_model


def add_demo_parser(commands: Any) -> None:
    """Register `demo`."""
    demo = commands.add_parser("demo", help="run the whole loop on a built-in drifting stream, narrated")
    demo.add_argument("--yes", action="store_true", help="approve a candidate that passes the gate without asking")
    demo.add_argument("--data", type=Path, help="your own training data (JSON Lines with text and label)")
    demo.add_argument("--stream", type=Path, help="your own stream that drifts (JSON Lines with text and label)")
    demo.add_argument(
        "--after",
        type=int,
        default=300,
        help="texts at the end of the stream kept for after the promotion (default 300)",
    )
    demo.add_argument("--workdir", type=Path, default=Path("insightloop-demo"), help="where everything goes")
    demo.add_argument("--base", help="base model (default: the packaged all-MiniLM-L6-v2)")
    demo.add_argument("--epochs", type=int, default=2)
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


def _first_model(args: argparse.Namespace, before: Path, workdir: Path) -> Path:
    """Train (or reuse from the cache) the first model; return a fresh registry holding it."""
    from insightloop.daemon.train import train_first_model

    base = args.base or default_base_model()
    key = hashlib.sha256(before.read_bytes() + f"{base}|{args.epochs}|{args.max_length}".encode()).hexdigest()[:12]
    cached = workdir / "cache" / f"first-model-{key}"
    if Registry(cached).production() is None:
        say(f"training the first model on {before} (base {Path(base).name}; cached for the next run) …")
        shutil.rmtree(cached, ignore_errors=True)
        settings = FineTuneSettings(
            epochs=args.epochs,
            max_length=args.max_length,
            batch_size=16,
            learning_rate=5e-5 if args.base is None else 2e-3,
            seed=0,
        )
        started = time.monotonic()
        with Ticker(lambda: f"  still training the first model ({time.monotonic() - started:.0f} s) …", 30.0):
            train_first_model(before, cached, base, settings, promote=True, progress=bars(), profile_rounds=100)
    else:
        say(f"using the cached first model ({cached})")
    run_registry = workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}" / "registry"
    shutil.copytree(cached, run_registry)
    return run_registry


def _evaluation_table(record: VersionRecord) -> list[str]:
    lines = [f"  {'data set':<44} {'metric':<9} {'champion':>9} {'candidate':>10} {'Δ':>8}  95% CI of Δ"]
    for section in record.evaluation.sections if record.evaluation else []:
        for row in section.rows:
            lines.append(
                f"  {section.name[:44]:<44} {row.metric:<9} {row.champion or 0:>9.4f} "
                f"{row.candidate or 0:>10.4f} {row.delta or 0:>+8.4f}  "
                f"[{row.ci_low or 0:+.4f}, {row.ci_high or 0:+.4f}] n={row.n}"
            )
    return lines


def _accuracy(store: Any, version: str, ids: set[str]) -> tuple[float | None, int]:
    rows = [r for r in store.recent_records(100_000, model_version=version, labeled_only=True) if r.id in ids]
    if not rows:
        return None, 0
    return sum(r.predicted == r.label for r in rows) / len(rows), len(rows)


def run_demo(args: argparse.Namespace) -> int:
    """The narrated loop; returns the exit code."""
    from insightloop.retrain import read_jsonl

    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if (args.data is None) != (args.stream is None):
        raise InsightloopError("--data and --stream go together")
    if args.data is None:
        before, stream = write_scenario(workdir / "scenario")
        say("built-in scenario: book reviews before the change, kitchen-product reviews after it")
    else:
        before, stream = args.data, args.stream
    stream_rows = read_jsonl(stream, require_label=True)
    post = min(args.after, len(stream_rows) // 3)
    pre = len(stream_rows) - post
    registry_root = _first_model(args, before, workdir)
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
                    "epochs": args.epochs,
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
                kwargs={"rate": args.rate, "labels_delay": 30, "limit": pre, "progress": bars()},
            )
            say(f"replaying {pre} texts of the stream (labels arrive 30 texts late) …")
            feeder.start()
            with Ticker(lambda: f"  {_scored(app)} texts scored so far"):
                code = _narrate(args, app, registry, story, url, token, time.monotonic() + args.timeout)
            feeder.join()
            if code != ExitCode.OK or story.promoted is None:
                _summary(story, registry, app, None, None, stream_rows, pre)
                return int(code)
            say(f"replaying the last {post} texts to the new model …")
            with Ticker(lambda: f"  {_scored(app)} texts scored so far"):
                replay(config, stream, rate=args.rate, labels_delay=30, skip=pre, progress=bars())
            late_ids = {e.id or f"{stream.stem}-{i}" for i, e in enumerate(stream_rows) if i >= pre}
            deadline = time.monotonic() + 120
            while _accuracy(app.store, story.promoted, late_ids)[1] < post * 0.9 and time.monotonic() < deadline:
                time.sleep(1)
            _summary(story, registry, app, v1, story.promoted, stream_rows, pre)
            return int(ExitCode.OK)
        finally:
            app.stop()


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
            for line in _evaluation_table(story.candidate):
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
    story: Story, registry: Registry, app: Any, v1: str | None, v2: str | None, stream_rows: list[Any], pre: int
) -> None:
    print("\n== summary ==", flush=True)
    print(f"insights raised: {len(story.insights)}; retraining jobs: {len(story.jobs)}", flush=True)
    first = registry.get(v1).metrics.get("validation_accuracy") if v1 else None
    if first is not None:
        print(f"first model {v1}: validation accuracy {first:.3f} (held-out training-domain texts)", flush=True)
    if story.candidate is not None:
        recent = next(
            (
                s
                for s in (story.candidate.evaluation.sections if story.candidate.evaluation else [])
                if s.name == RECENT
            ),
            None,
        )
        accuracy = next((r for r in recent.rows if r.metric == "accuracy"), None) if recent else None
        if accuracy:
            print(
                f"candidate {story.candidate.version} on held-out recent traffic: accuracy "
                f"{accuracy.champion:.3f} → {accuracy.candidate:.3f}",
                flush=True,
            )
    if v1 and v2:
        ids = [e.id or "" for e in stream_rows]
        drifted = set(ids[pre // 2 : pre])
        late = set(ids[pre:])
        before, n_before = _accuracy(app.store, v1, drifted)
        after, n_after = _accuracy(app.store, v2, late)
        if before is not None and after is not None:
            print(
                f"accuracy on drifted traffic: {before:.3f} with {v1} (n={n_before}) → {after:.3f} with {v2} "
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
