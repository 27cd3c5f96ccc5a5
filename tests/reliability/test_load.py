"""Sustained load at the scorer's measured capacity: lag stays bounded, memory flat, nothing dropped.

The daemon runs as a real process (every role, as deployed; the monitor's checks are off so that the capacity
measured is the scoring path's). A burst measures how fast it scores on this machine right now; then texts
arrive at SHARE of that rate for LOAD_S seconds, with a malformed one now and then.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.broker import free_port
from insightloop.daemon.kafka import ensure_topics, make_producer
from tests.integration.daemon_process import DaemonProcess, http_get
from tests.integration.test_scoring import metric_values
from tests.kafka_helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOAD_S = 120.0  # how long the sustained replay lasts (CI affords about two minutes)
SHARE = 0.8  # of the measured capacity
BURST = 1500  # texts of the capacity measurement (also the warm-up)
MAX_RATE = 600.0  # texts/s at most, so that a fast machine does not turn this into a test of the test's reader
MALFORMED_EVERY = 97  # one in this many messages is not JSON
LAG_BOUND_S = 15.0  # the lag may never exceed this many seconds of traffic
RSS_GROWTH = (1.15, 64 * 1024)  # the late RSS may exceed the early one by 15 % or 64 MiB, whichever is more
SAMPLE_S = 2.0
BATCH = 64


def sample(url: str) -> tuple[float, float]:
    """(texts scored so far, total consumer lag) from /metrics."""
    _, text = http_get(url + "/metrics")
    values = metric_values(text)
    scored = values.get(("insightloop_texts_scored_total", ()), 0.0)
    lag = sum(v for (name, _), v in values.items() if name == "insightloop_consumer_lag")
    return scored, lag


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def text(n: int) -> bytes:
    words = ["great", "awful", "product", "arrived", "today", "box", "really", "broken", "love", "item"]
    body = " ".join(words[(n * 7 + k * 3) % len(words)] for k in range(6 + n % 9))
    return json.dumps({"id": f"load-{n}", "text": body}).encode()


class Feeder(threading.Thread):
    """Produces texts at ``rate`` per second for ``seconds``, every MALFORMED_EVERY-th one malformed."""

    def __init__(self, config: Any, rate: float, seconds: float, first: int) -> None:
        super().__init__(name="load-feeder", daemon=True)
        self.config, self.rate, self.seconds, self.next = config, rate, seconds, first
        self.valid: list[str] = []
        self.malformed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = make_producer(self.config.kafka, linger_ms=20)
        try:
            started = time.monotonic()
            sent = 0
            futures: list[Any] = []
            while (now := time.monotonic()) - started < self.seconds:
                due = int((now - started) * self.rate)
                while sent < due:
                    n = self.next
                    self.next += 1
                    sent += 1
                    if n % MALFORMED_EVERY == 0:
                        futures.append(producer.send(self.config.topics.texts, value=b"not json %d" % n))
                        self.malformed += 1
                    else:
                        futures.append(producer.send(self.config.topics.texts, value=text(n)))
                        self.valid.append(f"load-{n}")
                if len(futures) > 2000:
                    producer.flush(timeout=60)
                    for future in futures:
                        future.get(timeout=60)
                    futures.clear()
                time.sleep(0.02)
            producer.flush(timeout=60)
            for future in futures:
                future.get(timeout=60)
        except BaseException as exc:
            self.error = exc
        finally:
            producer.close(timeout=10)


def test_sustained_load_at_capacity(make_config, tmp_path: Path, unique: str) -> None:
    config = make_config(
        scorer={"max_batch_size": BATCH, "max_wait_ms": 50},
        monitor={"group_id": f"monitor-{unique}", "check_every_records": 10_000_000, "check_interval_s": 86_400},
        controller={"group_id": f"controller-{unique}"},
    )
    ensure_topics(config.kafka, config.topics.all())
    daemon = DaemonProcess(config, tmp_path, "loaded", free_port()).start()
    samples: list[tuple[float, float, float, int]] = []  # (seconds into the load, scored, lag, rss KiB)
    try:
        daemon.wait_ready()
        assert daemon.process is not None
        pid = daemon.process.pid

        # 1. Capacity: a burst, already queued, scored as fast as this machine allows.
        producer = make_producer(config.kafka)
        try:
            futures = [producer.send(config.topics.texts, value=text(n)) for n in range(BURST)]
            producer.flush(timeout=60)
            for future in futures:
                future.get(timeout=60)
        finally:
            producer.close(timeout=10)
        first_seen: tuple[float, float] | None = None
        deadline = time.monotonic() + 300
        while True:
            scored, _ = sample(daemon.url)
            now = time.monotonic()
            if first_seen is None and scored > 0:
                first_seen = (now, scored)
            if scored >= BURST:
                break
            assert now < deadline, f"the burst was not scored in time ({scored} of {BURST})"
            time.sleep(0.1)
        assert first_seen is not None
        capacity = (BURST - first_seen[1]) / max(now - first_seen[0], 1e-3)
        rate = min(SHARE * capacity, MAX_RATE)
        print(f"measured capacity {capacity:.0f} texts/s; sustained rate {rate:.0f} texts/s for {LOAD_S:.0f} s")

        # 2. Sustained load at SHARE of it.
        feeder = Feeder(config, rate, LOAD_S, first=BURST)
        started = time.monotonic()
        feeder.start()
        while feeder.is_alive() and time.monotonic() - started < LOAD_S + 60:
            scored, lag = sample(daemon.url)
            samples.append((time.monotonic() - started, scored, lag, rss_kib(pid)))
            time.sleep(SAMPLE_S)
        feeder.join(60)
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        expected = BURST + len(feeder.valid)
        deadline = time.monotonic() + 120
        while (scored := sample(daemon.url)[0]) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_lag = sample(daemon.url)[1]

        predictions = read_topic(
            config, config.topics.predictions, until=lambda got: len(got) >= expected, timeout_s=120, settle_s=1
        )
        letters = read_topic(
            config, config.topics.deadletter, until=lambda got: len(got) >= feeder.malformed, timeout_s=60, settle_s=1
        )
        assert daemon.terminate() == 0, daemon.log_text()[-3000:]
    finally:
        daemon.kill()

    # Nothing dropped: count in = count out + dead letters (and nothing scored twice in a clean run).
    ids = [p["id"] for p in predictions]
    assert len(ids) == len(set(ids)) == expected, (len(ids), len(set(ids)), expected)
    assert set(ids) == {f"load-{n}" for n in range(BURST)} | set(feeder.valid)
    assert len(letters) == feeder.malformed and {d["reason"] for d in letters} == {"not_json"}
    assert scored == expected and drained_lag == 0

    # Lag bounded: never more than LAG_BOUND_S seconds of traffic behind.
    worst_lag = max(lag for _, _, lag, _ in samples)
    assert worst_lag <= max(rate * LAG_BOUND_S, 4 * BATCH), f"lag reached {worst_lag:.0f} at {rate:.0f} texts/s"

    # Memory flat: the last quarter of the run uses about what the first quarter did.
    quarter = LOAD_S / 4
    early = statistics.median(r for t, _, _, r in samples if t <= quarter)
    late = statistics.median(r for t, _, _, r in samples if t >= LOAD_S - quarter)
    factor, slack = RSS_GROWTH
    assert late <= max(early * factor, early + slack), f"RSS grew from {early / 1024:.0f} to {late / 1024:.0f} MiB"
    print(
        f"lag worst {worst_lag:.0f}, RSS {early / 1024:.0f} → {late / 1024:.0f} MiB, "
        f"{expected} predictions, {len(letters)} dead letters"
    )
