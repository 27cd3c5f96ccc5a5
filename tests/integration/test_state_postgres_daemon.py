"""The daemon with its state in a real PostgreSQL: the monitor joins texts, predictions and late labels into the
database, a restarted daemon finds them there, and a second process reading the same database sees them too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from insightloop.daemon.replay import replay
from insightloop.daemon.state import StateStore
from tests.integration.daemon_process import InProcessDaemon, http_get
from tests.integration.test_loop import wait_for
from tests.postgres import PostgresServer
from tests.synthetic import sentiment_rows, write_jsonl

pytestmark = [pytest.mark.integration]

TEXTS = 240


def test_the_monitor_keeps_its_records_in_postgres_across_a_restart(
    make_config: Any, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    with postgres_server.fresh_database() as database:
        url = postgres_server.url(database)
        config = make_config(state={"url": url, "password": postgres_server.password})
        stream = write_jsonl(tmp_path / "stream.jsonl", sentiment_rows(TEXTS, seed=7, prefix="pg"))
        reader = StateStore(tmp_path / "reader", url, postgres_server.password)  # another process's view
        try:
            with InProcessDaemon(config) as daemon:
                _, body = http_get(daemon.url + "/readyz")
                assert '"state": {"backend": "postgresql"}' in body
                replay(config, stream, labels_delay=20, progress=False)
                labeled = wait_for(
                    lambda: len(reader.recent_records(TEXTS, labeled_only=True)) >= TEXTS - 20 or None,
                    120,
                    "the monitor to store the joined, labeled records",
                )
                assert labeled
            assert not (config.state.dir / "insightloop.sqlite3").exists()  # nothing went to SQLite

            records = reader.recent_records(TEXTS)
            assert len(records) == TEXTS and {r.id for r in records} == {f"pg-{n}" for n in range(TEXTS)}
            labeled_before = {r.id: r.label for r in reader.recent_records(TEXTS, labeled_only=True)}
            with InProcessDaemon(config) as again:  # a restart (another node, the same database)
                _, body = http_get(again.url + "/readyz")
                assert '"state": {"backend": "postgresql"}' in body
                kept = {r.id: r.label for r in again.app.store.recent_records(TEXTS, labeled_only=True)}
            assert kept == labeled_before
        finally:
            reader.close()
