"""The loop on real drift: detection delay, false alarms, and accuracy after the change for
no retraining, insightloop's loop, and an oracle trained on the target domain — in one run.

Default data (../shared/data/amazon_multidomain_sentiment, ``--source books --target kitchen``): the first
model is trained on the source domain's train split; the stream is the source's test split, then 1,200
target reviews (its test split and half of its train split, shuffled), labels arriving late; the oracle is
trained on the other 800 target train reviews (disjoint from the stream). All three models are scored on
the last 30% of the post-change stream (360 reviews), whose labels the loop never sees.

    python bench/loop.py [--source books --target kitchen]
    python bench/loop.py --reference REF.jsonl --before B.jsonl --after A.jsonl --oracle-train T.jsonl

Last line: ``loop: delay=<texts> false_alarms=<n> acc_none=<x> acc_loop=<x> acc_oracle=<x> gap_closed=<f>``
(``gap_closed=nan`` when the oracle does not beat no retraining: there is no gap to close).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon_multidomain_sentiment"


def domain_rows(split: str, domain: str, seed: int) -> list[dict[str, str]]:
    """Rows of one domain of one split of the Amazon data, shuffled with our seed."""
    rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r.get("domain") == domain]
    random.Random(seed).shuffle(rows)
    return rows


def write_rows(rows: list[dict[str, str]], out: Path, limit: int | None) -> Path:
    """Write (at most ``limit``) rows as JSON Lines."""
    rows = rows[:limit] if limit else rows
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def accuracy(model_dir: Path, rows: list[dict[str, str]]) -> float:
    """Accuracy of a model version on labeled rows."""
    from insightloop.deploy import ModelArtifact

    artifact = ModelArtifact.load(model_dir, device="auto")
    predicted = artifact.predict([r["text"] for r in rows], batch_size=32).predicted_labels()
    return sum(p == r["label"] for p, r in zip(predicted, rows, strict=True)) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="training data of the first model")
    parser.add_argument("--before", type=Path, help="stream before the change (labeled)")
    parser.add_argument("--after", type=Path, help="stream after the change (labeled)")
    parser.add_argument("--oracle-train", type=Path, help="target-domain training data for the oracle")
    domains = ("books", "dvd", "electronics", "kitchen")
    parser.add_argument("--source", choices=domains, default="books", help="Amazon domain before the change")
    parser.add_argument("--target", choices=domains, default="kitchen", help="Amazon domain after the change")
    parser.add_argument("--base", help="base model (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--limit", type=int, help="at most this many rows per file (quick runs)")
    parser.add_argument("--labels-delay", type=int, default=50)
    parser.add_argument(
        "--min-new-labels",
        type=int,
        default=400,
        help="the controller's controller.min_new_labels: labeled post-insight texts before a job starts",
    )
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from insightloop.daemon.broker import EmbeddedBroker, free_port
    from insightloop.daemon.config import load_config
    from insightloop.daemon.replay import replay
    from insightloop.daemon.train import train_first_model
    from insightloop.daemon.wiring import build_app
    from insightloop.deploy import Registry
    from insightloop.retrain import FineTuneSettings, default_base_model, read_jsonl
    from insightloop.retrain.data import write_jsonl

    work = args.workdir or Path(tempfile.mkdtemp(prefix="insightloop-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.reference is None:
        if not DATA.is_dir():
            raise SystemExit(f"no data at {DATA}; pass --reference/--before/--after/--oracle-train")
        # The target domain's 400 test reviews and half of its 1,600 train reviews form the stream after the
        # change (its last 30%, 360 reviews, scores all three models); the other 800 train the oracle.
        target_train = domain_rows("train", args.target, args.seed)
        after_rows = [*domain_rows("test", args.target, args.seed), *target_train[:800]]
        random.Random(args.seed).shuffle(after_rows)
        reference_rows = domain_rows("train", args.source, args.seed)
        args.reference = write_rows(reference_rows, work / "reference.jsonl", args.limit)
        args.before = write_rows(domain_rows("test", args.source, args.seed), work / "before.jsonl", args.limit)
        args.after = write_rows(after_rows, work / "after.jsonl", args.limit)
        args.oracle_train = write_rows(target_train[800:], work / "oracle.jsonl", args.limit)
    before = read_jsonl(args.before, require_label=True)
    after = read_jsonl(args.after, require_label=True)
    cut = int(len(after) * 0.7)
    evaluation = [{"text": e.text, "label": str(e.label)} for e in after[cut:]]
    # The stream: before, then the first 70% of after (labels follow); the last 30% is held out entirely.
    stream = work / "stream.jsonl"
    write_jsonl(stream, [*before, *after[:cut]])
    base = args.base or default_base_model()
    settings = FineTuneSettings(
        epochs=args.epochs, max_length=args.max_length, learning_rate=args.learning_rate, seed=args.seed
    )
    started = time.perf_counter()
    print(f"training the first model on {args.reference} …", flush=True)
    first = train_first_model(args.reference, work / "registry", base, settings, promote=True, progress=False)
    print(f"training the oracle on {args.oracle_train} …", flush=True)
    oracle = train_first_model(
        args.oracle_train, work / "oracle-registry", base, settings, promote=False, progress=False, profile_rounds=0
    )
    registry = Registry(work / "registry")
    v1 = registry.production()
    with EmbeddedBroker(port=free_port()) as broker:
        config = load_config(
            None,
            {
                "kafka": {
                    "bootstrap_servers": broker.bootstrap_servers,
                    "session_timeout_ms": 6000,
                    "heartbeat_interval_ms": 1000,
                },
                "registry": {"path": str(work / "registry")},
                "state": {"dir": str(work / "state")},
                "api": {"host": "127.0.0.1", "http_port": free_port()},
                # The delay is counted in texts, so checks follow the count alone (no time cap between them).
                "monitor": {
                    "window_size": 200,
                    "min_window": 100,
                    "check_every_records": 50,
                    "check_interval_s": 3600,
                    "min_check_interval_s": 0.0,
                },
                "controller": {
                    "min_new_labels": args.min_new_labels,
                    "cooldown_s": 0,
                    "epochs": args.epochs,
                    "poll_s": 2,
                    "learning_rate": args.learning_rate,
                    "auto_approve": True,
                    "gate_min_improvement": 0.0,
                },
            },
            environ={},
        )
        app = build_app(config, "all")
        app.daemon.start()
        try:
            while not app.daemon.readiness()[0]:
                time.sleep(0.3)
            after_ids = {e.id for e in after[:cut]}
            seen: dict[str, int] = {}  # insight id -> post-change texts scored when it first appeared

            def watch() -> None:
                while not app.daemon.stop_event.is_set():
                    for insight in app.store.insights(50):
                        if insight["severity"] in ("warning", "critical") and insight["id"] not in seen:
                            records = app.store.recent_records(100_000)
                            seen[insight["id"]] = sum(r.id in after_ids for r in records)
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch, name="bench-watch")
            watcher.start()
            replay(config, stream, rate=args.rate, labels_delay=args.labels_delay, progress=False)
            replayed = time.monotonic()
            while registry.production() == v1 and time.monotonic() < replayed + 3600:
                jobs = app.store.jobs(5)
                if jobs and jobs[0].state in ("succeeded", "failed") and not jobs[0].gate_passed:
                    print(f"the loop's job ended without a promotion: {jobs[0]}", flush=True)
                    break
                if not jobs and time.monotonic() > replayed + 180:
                    print("no retraining job started within 3 minutes of the stream's end", flush=True)
                    break
                time.sleep(2)
            app.daemon.stop_event.set()
            watcher.join()
        finally:
            app.stop()
    loop_version = registry.production()
    candidates = [r.version for r in registry.records() if r.version != v1]
    for record in registry.records():
        if record.version == v1 or record.gate is None:
            continue
        # The candidate's own evaluation (champion vs candidate, on data the job held out) and the gate's why.
        print(f"\ncandidate {record.version} ({record.status.value}), gate passed={record.gate.passed}:")
        for section in record.evaluation.sections if record.evaluation else []:
            for row in section.rows:
                if row.metric == "accuracy" and None not in (row.champion, row.candidate, row.ci_low, row.ci_high):
                    print(
                        f"  {section.name:<28} champion {row.champion:.4f}  candidate {row.candidate:.4f}  "
                        f"difference CI [{row.ci_low:+.4f}, {row.ci_high:+.4f}]  n={row.n}"
                    )
        for reason in record.gate.reasons:
            print(f"  gate: {reason}")
    false_alarms = sum(1 for n in seen.values() if n == 0)
    delay = min((n for n in seen.values() if n > 0), default=-1)
    acc_none = accuracy(Path(first), evaluation)
    acc_loop = accuracy(registry.path_of(loop_version or ""), evaluation) if loop_version != v1 else acc_none
    acc_oracle = accuracy(Path(oracle), evaluation)
    gap = acc_oracle - acc_none
    # Undefined, not 0, when the oracle does not beat no retraining: there is no gap to close.
    closed = (acc_loop - acc_none) / gap if gap > 0 else math.nan
    minutes = (time.perf_counter() - started) / 60
    print(f"\n{'':<32} {'accuracy':>9}   (last 30% of the post-change stream, n={len(evaluation)})")
    print(f"{'no retraining (' + str(v1) + ')':<32} {acc_none:>9.4f}")
    print(f"{'insightloop loop (' + str(loop_version) + ')':<32} {acc_loop:>9.4f}")
    print(f"{'oracle (target-domain labels)':<32} {acc_oracle:>9.4f}")
    for version in candidates:
        if version != loop_version:  # a candidate the gate (or a person) kept out of production
            kept_out = accuracy(registry.path_of(version), evaluation)
            print(f"{'candidate kept out (' + version + ')':<32} {kept_out:>9.4f}   (not serving)")
    why = "" if gap > 0 else f" (undefined: the oracle, {acc_oracle:.4f}, does not beat no retraining)"
    print(
        f"detection delay: {delay} post-change texts; false alarms before the change: {false_alarms}; "
        f"gap closed: {closed:.2f}{why}; {minutes:.1f} min"
    )
    shutil.rmtree(work / "state" / "reports", ignore_errors=True)
    print(
        f"loop: delay={delay} false_alarms={false_alarms} acc_none={acc_none:.4f} acc_loop={acc_loop:.4f} "
        f"acc_oracle={acc_oracle:.4f} gap_closed={closed:.4f}"
    )


if __name__ == "__main__":
    main()
