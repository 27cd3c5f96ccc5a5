"""`insightloop models list | show | approve | reject | rollback | purge-texts` — locally on the registry
directory, or (approve, reject, rollback) through the daemon's authenticated HTTP API with ``--api-url`` and a
token."""

from __future__ import annotations

import argparse
import json
import logging
import urllib.error
import urllib.request
from typing import Any

from insightloop.daemon.config import Config
from insightloop.daemon.errors import ExitCode, InsightloopError
from insightloop.daemon.promotion import ModelRefusedError, ModelService, Publisher, kafka_publisher
from insightloop.deploy import ModelEvent, Registry, RegistryError

log = logging.getLogger(__name__)


def add_models_parser(commands: Any, add_common: Any) -> None:
    """Register the `models` sub-commands."""
    models = commands.add_parser("models", help="list, inspect, approve, reject and roll back model versions")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every version with its status")
    show = actions.add_parser("show", help="one version's record and audit trail (JSON)")
    show.add_argument("version")
    approve = actions.add_parser("approve", help="approve a candidate and promote it")
    approve.add_argument("version")
    approve.add_argument(
        "--override",
        action="store_true",
        help="approve although the evaluation gate failed (audited as an override)",
    )
    reject = actions.add_parser("reject", help="reject a candidate")
    reject.add_argument("version")
    rollback = actions.add_parser("rollback", help="return production to the previous (or named) version")
    rollback.add_argument("version", nargs="?")
    purge = actions.add_parser(
        "purge-texts",
        help="remove the texts a version directory keeps (its training data copy, its reference rows' texts)",
    )
    purge.add_argument("version")
    purge.add_argument("--by", required=True, help="your name, recorded in the audit log")
    purge.add_argument("--note", default="", help="why, recorded in the audit log")
    for parser in (listing, show, approve, reject, rollback, purge):
        add_common(parser, kafka=True, state=True)
    for parser in (approve, reject, rollback):
        parser.add_argument("--by", required=True, help="your name, recorded in the audit log")
        parser.add_argument("--note", default="", help="why, recorded in the audit log")
        parser.add_argument("--api-url", help="go through the daemon's API (e.g. http://localhost:8080)")
        parser.add_argument("--token", help="bearer token for --api-url (default: api.approval_token)")
    from insightloop.daemon.import_cmd import add_import_parser, run_import

    add_import_parser(actions, add_common)
    actions.choices["import"].set_defaults(run_action=run_import)


def run_models(args: argparse.Namespace, config: Config) -> int:
    """Carry out one `models` action."""
    if getattr(args, "run_action", None) is not None:  # actions that bring their own runner (`import`)
        return int(args.run_action(args, config))
    registry = Registry(config.registry.path)
    if args.action == "list":
        print_table(registry)
        return int(ExitCode.OK)
    if args.action == "show":
        record = _get(registry, args.version)
        audit = [e.model_dump(mode="json") for e in registry.audit_log() if e.version == args.version]
        print(json.dumps({**record.model_dump(mode="json"), "audit": audit}, indent=2))
        return int(ExitCode.OK)
    if args.action == "purge-texts":
        try:
            changed = registry.purge_texts(args.version, by=args.by, reason=args.note)
        except RegistryError as exc:
            raise CommandRefused(str(exc)) from exc
        print(f"purged the texts of {args.version}: {', '.join(changed) or 'none were left'}")
        return int(ExitCode.OK)
    api_url = args.api_url or config.api.url
    if api_url and args.api_url:
        return _through_api(args, api_url, args.token or config.api.approval_token)
    service = ModelService(registry, publisher_for(config))
    try:
        if args.action == "approve":
            event = service.approve(args.version, args.by, args.note, override=args.override)
            print(f"approved and promoted {event.version}; scorers swap to it between batches")
        elif args.action == "reject":
            service.reject(args.version, args.by, args.note)
            print(f"rejected {args.version}")
        else:
            event = service.rollback(args.by, args.version, args.note)
            print(f"rolled back: {event.version} serves traffic again")
    except (RegistryError, ModelRefusedError) as exc:
        raise CommandRefused(str(exc)) from exc
    return int(ExitCode.OK)


class CommandRefused(InsightloopError):
    """The registry or the validation refused the change."""


def _get(registry: Registry, version: str) -> Any:
    try:
        return registry.get(version)
    except RegistryError as exc:
        raise CommandRefused(str(exc)) from exc


def publisher_for(config: Config) -> Publisher | None:
    """A publisher of ``models`` events for a one-off command, or None when no broker answers within 5 s.

    The registry change never waits on Kafka: it is made and audited first, and scorers also poll the
    production pointer, so an event that cannot be sent only delays the swap.
    """
    from insightloop.daemon.kafka import make_producer

    try:
        kafka = config.kafka.model_copy(update={"bootstrap_timeout_ms": min(config.kafka.bootstrap_timeout_ms, 5000)})
        producer = make_producer(kafka, max_block_ms=5000)
    except InsightloopError as exc:
        log.warning("%s; the change is made in the registry and scorers pick it up by polling", exc)
        return None
    send = kafka_publisher(producer, config.topics.models)

    def publish(event: ModelEvent) -> None:
        try:
            send(event)
        finally:
            producer.close(timeout=10)

    return publish


def print_table(registry: Registry) -> None:
    """Versions as a readable table."""
    production = registry.production()
    print(f"{'version':<8} {'status':<10} {'created (UTC)':<17} {'from':<10} {'val. acc.':>9}  gate")
    for record in registry.records():
        accuracy = record.metrics.get("validation_accuracy")
        gate = "–" if record.gate is None else ("passed" if record.gate.passed else "FAILED")
        marker = " *" if record.version == production else ""
        print(
            f"{record.version:<8} {record.status.value:<10} {record.created_at:%Y-%m-%d %H:%M} "
            f"{(record.parent or 'base'):<10} {'' if accuracy is None else f'{accuracy:.4f}':>9}  {gate}{marker}"
        )
    for problem in registry.problems():
        print(f"unreadable, skipped: {problem.describe()}")


def _through_api(args: argparse.Namespace, api_url: str, token: str | None) -> int:
    if not token:
        raise CommandRefused("--api-url needs a token: --token or INSIGHTLOOP_API__APPROVAL_TOKEN")
    if args.action == "rollback":
        path, body = "/api/models/rollback", {"by": args.by, "note": args.note, "version": args.version}
    else:
        path = f"/api/models/{args.version}/{args.action}"
        body = {"by": args.by, "note": args.note}
        if args.action == "approve" and args.override:
            body["override"] = True
    request = urllib.request.Request(
        api_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            print(json.dumps(json.loads(response.read()), indent=2))
    except urllib.error.HTTPError as error:
        message = json.loads(error.read() or b"{}").get("error", error.reason)
        raise CommandRefused(f"the API refused ({error.code}): {message}") from None
    except urllib.error.URLError as error:
        raise CommandRefused(f"cannot reach {api_url}: {error.reason}") from None
    return int(ExitCode.OK)
