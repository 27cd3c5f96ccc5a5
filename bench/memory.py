"""Benchmark: the daemon's resident memory over a long replay stays bounded.

``insightloop run --role all`` runs as a subprocess against the embedded broker, with a tiny BERT (2
layers, width 32, the packaged MiniLM tokenizer) trained in a few seconds on real Amazon reviews, so the
run measures the daemon's own bookkeeping — consumer buffers, the monitor's windows, caches, the SQLite
state store with its retention limit (``monitor.retention_max_rows``), metrics — rather than a model's
weights. ``--texts N`` short real review texts (first 160 characters of the Amazon reviews, cycled, each
with a unique id) are replayed into the texts topic with their labels 100 records behind; the monitor
joins texts, predictions and labels and runs its detector checks; the controller follows insights but
launches no retraining job (its ``kinds`` list is empty). The daemon's RSS is printed at start (ready,
before any text), after every ``--every`` predictions and at the end. Last line:
``memory: start_mb=<x> end_mb=<x> growth_mb=<x>``.

    python bench/memory.py [--texts 100000] [--every 10000] [--retention-rows 20000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon_multidomain_sentiment"


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_rows(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in ("train.jsonl", "test.jsonl"):
        if (folder / name).is_file():
            with open(folder / name, encoding="utf-8") as handle:
                rows += [json.loads(line) for line in handle if line.strip()]
    return rows


def train_tiny(rows: list[dict[str, Any]], workdir: Path, epochs: int) -> Path:
    """A registry whose production version is a tiny BERT fine-tuned on ``rows`` (seconds on a CPU)."""
    from insightloop.daemon.train import train_first_model
    from insightloop.retrain import FineTuneSettings, save_tiny_bert

    base = save_tiny_bert(workdir / "tiny-bert")
    train = workdir / "train.jsonl"
    with open(train, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"text": row["text"], "label": row["label"], "domain": row.get("domain")}) + "\n")
    registry = workdir / "registry"
    settings = FineTuneSettings(epochs=epochs, learning_rate=2e-3, batch_size=16, max_length=64, projection_dims=8)
    train_first_model(train, registry, str(base), settings, promote=True, progress=False, profile_rounds=20)
    return registry


def write_stream(rows: list[dict[str, Any]], n: int, path: Path) -> None:
    """``n`` short texts (first 160 characters of the reviews, cycled) with unique ids and their labels."""
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            row = rows[i % len(rows)]
            text = row["text"][:160]
            handle.write(
                json.dumps({"id": f"m-{i}", "text": text, "label": row["label"], "domain": row.get("domain")}) + "\n"
            )


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the daemon was not ready within {timeout_s} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000, help="print RSS after every N predictions")
    parser.add_argument("--retention-rows", type=int, default=20_000, help="monitor.retention_max_rows")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train.jsonl / test.jsonl")
    parser.add_argument("--smoke", action="store_true", help="1,000 texts and a smaller model (for tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.texts, args.every = 1000, 500
    rows = [r for r in load_rows(args.data) if isinstance(r.get("text"), str) and r.get("label") is not None]
    if not rows:
        print(f"no data under {args.data}; pass --data FOLDER", file=sys.stderr)
        return 2

    import yaml
    from kafka import KafkaConsumer, TopicPartition

    from insightloop.daemon.broker import EmbeddedBroker, free_port
    from insightloop.daemon.config import load_config
    from insightloop.daemon.kafka import common_settings, ensure_topics
    from insightloop.daemon.replay import replay

    with tempfile.TemporaryDirectory(prefix="insightloop-memory-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        n_train = 200 if args.smoke else 600
        registry = train_tiny(rows[:: max(1, len(rows) // n_train)][:n_train], workdir, epochs=1 if args.smoke else 2)
        print(f"tiny model trained in {time.perf_counter() - started:.1f} s ({registry})")
        stream = workdir / "stream.jsonl"
        write_stream(rows, args.texts, stream)

        with EmbeddedBroker(port=free_port()) as broker:
            http_port = free_port()
            config = load_config(
                None,
                {
                    "kafka": {"bootstrap_servers": broker.bootstrap_servers},
                    "registry": {"path": str(registry)},
                    "state": {"dir": str(workdir / "state")},
                    "api": {"host": "127.0.0.1", "http_port": http_port},
                    "monitor": {"retention_max_rows": args.retention_rows},
                    "controller": {"kinds": []},
                },
                environ={},
            )
            config_path = workdir / "daemon.yaml"
            config_path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())), encoding="utf-8")
            ensure_topics(config.kafka, config.topics.all())
            log_path = workdir / "daemon.log"
            with open(log_path, "wb") as log:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "insightloop.daemon", "run", "--config", str(config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"},
                )
                try:
                    wait_ready(f"http://127.0.0.1:{http_port}", daemon)
                    time.sleep(1.0)
                    start_mb = rss_mb(daemon.pid)
                    print(f"daemon pid {daemon.pid} ready; RSS at start {start_mb:.1f} MB")
                    print(f"{'predictions':>12} {'RSS MB':>8} {'seconds':>8} {'texts/s':>8}")
                    print(f"{0:>12} {start_mb:8.1f} {0.0:8.1f} {'':>8}", flush=True)
                    replayer = threading.Thread(
                        target=replay, args=(config, stream), kwargs={"labels_delay": 100, "progress": False}
                    )
                    replay_started = time.perf_counter()
                    replayer.start()
                    counter = KafkaConsumer(
                        **common_settings(config.kafka), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
                    )
                    found = counter.partitions_for_topic(config.topics.predictions) or set()
                    while not found:
                        time.sleep(0.1)
                        found = counter.partitions_for_topic(config.topics.predictions) or set()
                    counter.assign([TopicPartition(config.topics.predictions, p) for p in sorted(found)])
                    counter.seek_to_beginning()
                    seen: set[str] = set()
                    samples = [start_mb]
                    mark = args.every
                    last_change, last_count = time.monotonic(), 0
                    while len(seen) < args.texts:
                        for batch in counter.poll(timeout_ms=200).values():
                            seen.update(json.loads(record.value)["id"] for record in batch)
                        if daemon.poll() is not None:
                            raise RuntimeError(f"the daemon exited with {daemon.returncode}")
                        if len(seen) != last_count:
                            last_change, last_count = time.monotonic(), len(seen)
                        elif time.monotonic() - last_change > 180:
                            raise RuntimeError(f"no prediction for 180 s after {len(seen)}")
                        while len(seen) >= mark and mark <= args.texts:
                            now_mb = rss_mb(daemon.pid)
                            samples.append(now_mb)
                            elapsed = time.perf_counter() - replay_started
                            print(f"{mark:>12} {now_mb:8.1f} {elapsed:8.1f} {len(seen) / elapsed:8.0f}", flush=True)
                            mark += args.every
                    counter.close()
                    replayer.join()
                    settle = 1.0 if args.smoke else 5.0  # the monitor finishes joining the last records
                    time.sleep(settle)
                    end_mb = rss_mb(daemon.pid)
                    print(f"{f'end (+{settle:.0f} s)':>12} {end_mb:8.1f} {time.perf_counter() - replay_started:8.1f}")
                finally:
                    daemon.send_signal(signal.SIGTERM)
                    try:
                        code = daemon.wait(60)
                    except subprocess.TimeoutExpired:
                        daemon.kill()
                        code = daemon.wait()
            db_mb = sum(p.stat().st_size for p in (workdir / "state").rglob("*") if p.is_file()) / 2**20
            print(f"daemon exit code {code}; state directory {db_mb:.1f} MB on disk")
            if len(samples) >= 3:
                later = [*samples[2:], end_mb]
                print(
                    f"after the first {2 * args.every} texts RSS moved between {min(later):.1f} and "
                    f"{max(later):.1f} MB (retention_max_rows {args.retention_rows})"
                )
            if code != 0:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
    print(f"memory: start_mb={start_mb:.1f} end_mb={end_mb:.1f} growth_mb={end_mb - start_mb:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
