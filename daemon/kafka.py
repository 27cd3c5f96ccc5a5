"""Kafka clients built from configuration, so the embedded broker and a real cluster work the same."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from insightloop.daemon.config import KafkaConfig
from insightloop.daemon.errors import BrokerUnreachableError, TemporaryError

log = logging.getLogger(__name__)

# What kafka-python raises when no broker answers at the bootstrap servers.
_UNREACHABLE = (KafkaConnectionError, KafkaTimeoutError)


def common_settings(config: KafkaConfig) -> dict[str, Any]:
    """Connection and security settings shared by producers, consumers and the admin client."""
    settings: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in config.bootstrap_servers.split(",") if s.strip()],
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
        "request_timeout_ms": config.request_timeout_ms,
        "bootstrap_timeout_ms": config.bootstrap_timeout_ms,
    }
    version = config.api_version_tuple()
    if version is not None:
        settings["api_version"] = version
    if config.security_protocol.startswith("SASL"):
        settings["sasl_mechanism"] = config.sasl_mechanism or "PLAIN"
        settings["sasl_plain_username"] = config.sasl_username
        settings["sasl_plain_password"] = config.sasl_password
    if config.security_protocol in ("SSL", "SASL_SSL"):
        settings["ssl_check_hostname"] = config.ssl_check_hostname
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(config, key):
                settings[key] = getattr(config, key)
    return settings


def make_producer(config: KafkaConfig, **overrides: Any) -> Any:
    """A producer that waits for all in-sync replicas and retries transient errors."""
    from kafka import KafkaProducer

    settings = {
        **common_settings(config),
        "acks": "all",
        "retries": 5,
        "linger_ms": 5,
        "max_in_flight_requests_per_connection": 1,
        # Delivery is at least once and every consumer is idempotent by id, so the idempotent producer buys
        # nothing here; and kafka-python turns a broker that lost its producer state (a restarted broker
        # without persistent storage, an expired producer id) into a fatal error after which the producer
        # never sends again. One in flight per connection keeps each partition's order without it.
        "enable_idempotence": False,
        **overrides,
    }
    try:
        return KafkaProducer(**settings)
    except _UNREACHABLE as exc:
        raise BrokerUnreachableError(f"no Kafka broker reachable at {config.bootstrap_servers}") from exc


# Ours, and the consumer-group errors after a rebalance or a broker restart (the group moved on; the records
# not committed are read again).
_TRANSIENT = (TemporaryError, CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError)


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away when the broker comes back: worth retrying with a fresh client."""
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


class KafkaProbe:
    """Whether any bootstrap server accepts a TCP connection, checked at most every ``interval_s`` seconds.

    Readiness uses it: while no broker answers, the daemon says it is not ready (its clients retry on their own).
    """

    def __init__(self, config: KafkaConfig, interval_s: float = 1.0, connect_timeout_s: float = 0.5) -> None:
        self.addresses: list[tuple[str, int]] = []
        for server in common_settings(config)["bootstrap_servers"]:
            host, _, port = server.rpartition(":")
            self.addresses.append((host.strip("[]") or "localhost", int(port) if port.isdigit() else 9092))
        self.interval_s = interval_s
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._reachable = False

    def reachable(self) -> bool:
        """True if a bootstrap server accepted a connection at the last check."""
        with self._lock:
            if time.monotonic() - self._checked_at >= self.interval_s:
                self._reachable = any(self._connects(address) for address in self.addresses)
                self._checked_at = time.monotonic()
            return self._reachable

    def _connects(self, address: tuple[str, int]) -> bool:
        try:
            with socket.create_connection(address, timeout=self.connect_timeout_s):
                return True
        except OSError:
            return False


def make_consumer(config: KafkaConfig, topics: list[str] | None, group_id: str | None, **overrides: Any) -> Any:
    """A consumer with manual commits (offsets are committed only after outputs are acknowledged)."""
    from kafka import KafkaConsumer

    settings = {
        **common_settings(config),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": config.heartbeat_interval_ms,
        "fetch_max_wait_ms": 100,
        **overrides,
    }
    try:
        consumer = KafkaConsumer(**settings)
    except _UNREACHABLE as exc:
        raise BrokerUnreachableError(f"no Kafka broker reachable at {config.bootstrap_servers}") from exc
    if topics:
        consumer.subscribe(topics)
    return consumer


def ensure_topics(config: KafkaConfig, topics: list[str]) -> list[str]:
    """Create the topics that do not exist yet; return the ones created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    created = []
    try:
        admin = KafkaAdminClient(**common_settings(config))
        try:
            for name in topics:
                try:
                    admin.create_topics([NewTopic(name, config.topic_partitions, config.replication_factor)])
                    created.append(name)
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()
    except _UNREACHABLE as exc:
        raise BrokerUnreachableError(f"no Kafka broker reachable at {config.bootstrap_servers}: {exc}") from exc
    if created:
        log.info("created topics %s", ", ".join(created))
    return created
