"""One root exception, a temporary and a permanent branch, and the CLI's named exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the `insightloop` command; scripts and the chart rely on them."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG_ERROR = 3
    BROKER_UNREACHABLE = 4
    NO_MODEL = 5
    DATA_ERROR = 6
    CHECK_FAILED = 7
    TEMPORARY_FAILURE = 75  # sysexits' EX_TEMPFAIL: trying again later may succeed
    INTERRUPTED = 130


class InsightloopError(Exception):
    """Root of every error insightloop raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE


class TemporaryError(InsightloopError):
    """Worth retrying with backoff (the broker is away, a write timed out)."""

    exit_code = ExitCode.TEMPORARY_FAILURE


class PermanentError(InsightloopError):
    """Retrying cannot help: dead-letter the input or surface the error."""


class UsageError(PermanentError):
    """A command-line value is out of range or contradicts another."""

    exit_code = ExitCode.USAGE


class ConfigError(PermanentError):
    """The configuration is invalid; the message names the key."""

    exit_code = ExitCode.CONFIG_ERROR


class BrokerUnreachableError(TemporaryError):
    """No Kafka broker answered at the configured bootstrap servers."""

    exit_code = ExitCode.BROKER_UNREACHABLE


class NoModelError(PermanentError):
    """The registry holds no production model to serve."""

    exit_code = ExitCode.NO_MODEL


class DataError(PermanentError):
    """An input file is unreadable or malformed; the message names file and line."""

    exit_code = ExitCode.DATA_ERROR
