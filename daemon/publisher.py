"""The monitor's publisher: the outbox in the state store to the insights topic.

A new insight enters the outbox in the same transaction that saves the tracker state counting it as raised
(the tracker never calls it new again). It leaves the outbox only when the broker acknowledges it, so an
insight raised while Kafka is away goes out with a later check or after a restart. Delivery is at least
once: consumers are idempotent by insight id.
"""

from __future__ import annotations

import logging
from typing import Any

from insightloop.daemon.metrics import MonitorObserver
from insightloop.daemon.state import StateStore
from insightloop.detectors import Insight

log = logging.getLogger(__name__)


class Publisher:
    """Sends what the outbox holds, oldest first; ``producer`` is set by the monitor once it has one."""

    def __init__(self, store: StateStore, topic: str, observer: MonitorObserver, ack_timeout_s: float = 30.0) -> None:
        self.store = store
        self.topic = topic
        self.observer = observer
        self.ack_timeout_s = ack_timeout_s
        self.producer: Any = None
        self.stalled = False  #: the last flush stopped at an insight the broker did not acknowledge

    def pending(self) -> int:
        """How many insights wait in the outbox."""
        return len(self.store.outbox())

    def flush(self) -> list[Insight]:
        """Publish the outbox in order until the broker fails to acknowledge one; returns those sent.

        The rest stay in the outbox for the next flush (in order: the first failure stops this one, so a
        broker that is away costs one acknowledgement timeout per flush, not one per insight).
        """
        sent: list[Insight] = []
        self.stalled = False
        for insight in self.store.outbox():
            if self.producer is None:
                self.stalled = True
                break
            try:
                future = self.producer.send(
                    self.topic, key=insight.id.encode(), value=insight.model_dump_json().encode()
                )
                future.get(timeout=self.ack_timeout_s)
            except Exception as exc:  # kafka-python raises its own errors and timeouts; all mean "not yet"
                self.stalled = True
                log.error("could not publish insight %s (%s); it stays in the outbox", insight.id, exc)
                break
            self.store.remove_from_outbox(insight.id)
            self.observer.on_insight_published(insight.kind, insight.severity)
            log.warning("insight %s (%s, %s): %s", insight.id, insight.kind, insight.severity, insight.summary)
            sent.append(insight)
        return sent
