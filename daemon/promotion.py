"""Changing what serves traffic: approve → validate → promote → publish, reject, roll back.

The registry records every transition; this service adds the checks that need the daemon's
environment (the version must load and pass a smoke test before the pointer moves) and publishes
the ``models`` event that makes every scorer swap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from insightloop.daemon.errors import PermanentError
from insightloop.daemon.metrics import Metrics
from insightloop.deploy import (
    TOKEN_TASK,
    ModelArtifact,
    ModelEvent,
    ModelLoadError,
    Registry,
    TokenClassifier,
    VersionRecord,
)

log = logging.getLogger(__name__)

Publisher = Callable[[ModelEvent], None]


class ModelRefusedError(PermanentError):
    """The version failed to load or to pass the smoke test; nothing was changed."""


def validate_loadable(registry: Registry, version: str) -> None:
    """Load ``version`` on the CPU and smoke-test it; raise ModelRefusedError if it cannot serve."""
    path = registry.path_of(version)
    try:
        if ModelArtifact.read_settings(path).task == TOKEN_TASK:
            TokenClassifier.load(path, device="cpu").smoke_test()
        else:
            ModelArtifact.load(path, device="cpu").smoke_test()
    except ModelLoadError as exc:
        raise ModelRefusedError(f"{version} cannot serve: {exc}") from exc


class ModelService:
    """The one path through which approvals, promotions (`train --promote` too), rejections and rollbacks happen.

    The registry change is made and audited first; the ``models`` event follows. When it cannot be
    published the change stands and is logged: scorers also poll the production pointer
    (``scorer.model_poll_s``), so a lost event only delays the swap.
    """

    def __init__(self, registry: Registry, publish: Publisher | None = None, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self._publish = publish
        self._metrics = metrics

    def _announce(self, event: ModelEvent) -> None:
        if self._publish is None:
            return
        try:
            self._publish(event)
        except Exception as exc:  # scorers also poll the registry pointer, so a lost event only delays
            log.warning(
                "could not publish %s of %s (%s); scorers will notice the registry change by polling",
                event.action,
                event.version,
                exc,
            )

    def approve(
        self, version: str, by: str, note: str = "", override: bool = False, via: str | None = None
    ) -> ModelEvent:
        """Approve a candidate and promote it, after checking it loads and passes the smoke test."""
        self.registry.get(version)  # unknown versions fail before the expensive check
        validate_loadable(self.registry, version)
        self.registry.approve(version, by=by, note=note, override=override, via=via)
        event = self.registry.promote(version, by=by, reason=note or "approved", via=via)
        log.info("%s approved and promoted %s", by, version)
        if self._metrics is not None:
            self._metrics.promotions.inc()
        self._announce(event)
        return event

    def reject(self, version: str, by: str, note: str = "", via: str | None = None) -> VersionRecord:
        """Reject a candidate."""
        record = self.registry.reject(version, by=by, note=note, via=via)
        log.info("%s rejected %s", by, version)
        return record

    def rollback(self, by: str, to: str | None = None, note: str = "", via: str | None = None) -> ModelEvent:
        """Return production to ``to`` or the previous production version."""
        target = to or self.registry.previous_production()
        if target is not None:
            validate_loadable(self.registry, target)
        event = self.registry.rollback(by=by, to=target, reason=note, via=via)
        log.info("%s rolled production back to %s", by, event.version)
        if self._metrics is not None:
            self._metrics.rollbacks.inc()
        self._announce(event)
        return event


def kafka_publisher(producer: object, topic: str) -> Publisher:
    """A publisher that sends model events to ``topic`` and waits for the acknowledgement."""

    def publish(event: ModelEvent) -> None:
        future = producer.send(  # type: ignore[attr-defined]
            topic, key=event.version.encode(), value=event.model_dump_json().encode("utf-8")
        )
        future.get(timeout=30)

    return publish
