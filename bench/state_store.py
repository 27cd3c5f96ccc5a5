"""Benchmark: the state store's hot paths on PostgreSQL against SQLite (the default), in one process.

What the monitor does to the store, on real texts (the Amazon reviews in ../shared/data, cycled with unique
ids): one poll's texts and predictions written together (``add_polled``, 500 of each, 32-float embeddings),
with the late labels of the previous poll's texts, a check's window read back (``recent_records`` of the
newest 1,000), and retention (``apply_retention``). Each round runs the same operations on a fresh SQLite file
(WAL, ``synchronous=NORMAL``, the store's settings) and on a fresh database of a throwaway PostgreSQL cluster
on 127.0.0.1 (initdb'd here, ``fsync`` on and ``synchronous_commit=off``: like SQLite's WAL at NORMAL, a crash
may lose the last commits but never corrupts), interleaved, so both see the same machine noise. After each
round the two stores are compared record by record. ``--url`` uses an existing PostgreSQL instead (the
network between this process and it is then part of what is measured).

    python bench/state_store.py [--records 20000] [--rounds 3] [--url postgresql://USER@HOST/DB] [--smoke]

Last line: ``state_store: records=N sqlite_records_per_s=X postgres_records_per_s=X ratio=X
sqlite_window_ms=X postgres_window_ms=X`` (ratio = PostgreSQL's ingest rate / SQLite's; medians over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.postgres starts the throwaway server

from insightloop.daemon.state import LabelRow, PredictionRow, StateStore, TextRow

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon_multidomain_sentiment"
POLL = 500
WINDOW = 1000
DIMS = 32


def load_texts(limit: int) -> list[dict[str, str]]:
    path = DATA / "train.jsonl"
    if not path.is_file():
        sys.exit(f"real review data not found at {path.resolve()}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][:limit]
    return [{"text": r["text"], "label": r["label"], "domain": r["domain"]} for r in rows]


def polls(texts: list[dict[str, str]], records: int, seed: int) -> list[tuple[list[TextRow], list[PredictionRow]]]:
    rng = np.random.default_rng(seed)
    batches = []
    for start in range(0, records, POLL):
        t, p = [], []
        for n in range(start, min(start + POLL, records)):
            row = texts[n % len(texts)]
            rid = f"r{n:07d}"
            t.append(TextRow(rid, row["text"], None, {"domain": row["domain"]}))
            confidence = float(rng.uniform(0.5, 1.0))
            scores = {row["label"]: confidence, "other": 1 - confidence}
            embedding = rng.standard_normal(DIMS).astype(np.float32).tolist()
            p.append(PredictionRow(rid, "v0001", row["label"], scores, embedding, len(row["text"]) // 4))
        batches.append((t, p))
    return batches


def run(store: StateStore, batches: list[tuple[list[TextRow], list[PredictionRow]]]) -> tuple[float, float]:
    """Ingest every poll (with the previous poll's labels), then read a window; (records/s, window ms)."""
    now = time.time()
    started = time.perf_counter()
    previous: list[TextRow] = []
    for texts, predictions in batches:  # one poll: its texts and predictions, and the previous poll's labels
        store.add_polled(texts, predictions, [LabelRow(r.id, "positive") for r in previous], now)
        previous = texts
        now += 0.01
    store.apply_retention(max_age_s=7 * 86400, max_rows=10**7, now=now)
    elapsed = time.perf_counter() - started
    records = sum(len(t) + len(p) for t, p in batches) + sum(len(t) for t, _ in batches[:-1])
    read_started = time.perf_counter()
    window = store.recent_records(WINDOW)
    window_ms = (time.perf_counter() - read_started) * 1000
    assert len(window) == min(WINDOW, sum(len(t) for t, _ in batches))
    return records / elapsed, window_ms


def same_records(a: StateStore, b: StateStore, n: int) -> None:
    left, right = a.recent_records(n), b.recent_records(n)
    assert len(left) == len(right) == n, (len(left), len(right), n)
    for x, y in zip(left, right, strict=True):
        assert (x.id, x.text, x.meta, x.predicted, x.scores, x.label) == (
            y.id,
            y.text,
            y.meta,
            y.predicted,
            y.scores,
            y.label,
        )
        assert np.array_equal(x.embedding, y.embedding)


@contextmanager
def postgres(url: str | None) -> Iterator[Callable[[], tuple[str, str | None, Callable[[], None]]]]:
    """A factory of fresh databases: (url, password, drop)."""
    if url is not None:
        password = os.environ.get("INSIGHTLOOP_STATE__PASSWORD")

        def existing() -> tuple[str, str | None, Callable[[], None]]:
            return url, password, lambda: None  # the same database each round: emptied by the caller

        yield existing
        return
    from tests.postgres import running_server

    with running_server(fsync=True) as server:

        def fresh() -> tuple[str, str | None, Callable[[], None]]:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            with server.admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')

            def drop() -> None:
                with server.admin() as conn:
                    conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

            return server.url(name), server.password, drop

        yield fresh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="texts (each with a prediction and a label)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default=None, help="an existing PostgreSQL database (emptied!) instead of initdb")
    parser.add_argument("--smoke", action="store_true", help="1,000 texts, one round (tests/bench)")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.rounds = 1000, 1
    texts = load_texts(args.records)
    print(f"{args.records} texts from {DATA.resolve()} ({len(texts)} distinct), polls of {POLL}, {args.rounds} rounds")
    sqlite_rates, pg_rates, sqlite_ms, pg_ms = [], [], [], []
    with postgres(args.url) as new_database, tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            batches = polls(texts, args.records, seed=round_)
            order = ("sqlite", "postgresql") if round_ % 2 == 0 else ("postgresql", "sqlite")
            stores: dict[str, StateStore] = {}
            drop: Callable[[], None] = lambda: None  # noqa: E731
            for backend in order:
                if backend == "sqlite":
                    store = StateStore(Path(scratch) / f"round-{round_}")
                else:
                    url, password, drop = new_database()
                    store = StateStore(Path(scratch) / "pg", url, password)
                    if args.url is not None:
                        with store.transaction() as conn:
                            for table in ("records", "waiting_labels"):
                                conn.execute(f"DELETE FROM {table}")
                rate, window_ms = run(store, batches)
                (sqlite_rates if backend == "sqlite" else pg_rates).append(rate)
                (sqlite_ms if backend == "sqlite" else pg_ms).append(window_ms)
                stores[backend] = store
                print(f"round {round_} {backend:10s} {rate:9.0f} records/s  window of {WINDOW}: {window_ms:6.1f} ms")
            same_records(stores["sqlite"], stores["postgresql"], min(WINDOW, args.records))
            for store in stores.values():
                store.close()
            drop()
    sqlite_rate, pg_rate = statistics.median(sqlite_rates), statistics.median(pg_rates)
    print(
        f"state_store: records={args.records} sqlite_records_per_s={sqlite_rate:.0f} "
        f"postgres_records_per_s={pg_rate:.0f} ratio={pg_rate / sqlite_rate:.2f} "
        f"sqlite_window_ms={statistics.median(sqlite_ms):.1f} postgres_window_ms={statistics.median(pg_ms):.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
