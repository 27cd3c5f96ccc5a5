"""Kafka clients built from configuration, so the embedded broker and a real cluster work the same."""

from __future__ import annotations

import logging
from typing import Any

from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from insightloop.daemon.config import KafkaConfig
from insightloop.daemon.errors import BrokerUnreachableError

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
        **overrides,
    }
    try:
        return KafkaProducer(**settings)
    except _UNREACHABLE as exc:
        raise BrokerUnreachableError(f"no Kafka broker reachable at {config.bootstrap_servers}") from exc


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
