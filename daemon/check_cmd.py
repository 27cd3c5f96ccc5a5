"""`insightloop check`: the monitor's detectors offline, for batch use and CI gates."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from insightloop.daemon.config import StateConfig, load_config
from insightloop.daemon.errors import DataError, ExitCode
from insightloop.daemon.mapping import MessageMapping
from insightloop.daemon.task_option import add_task_option
from insightloop.deploy import TOKEN_TASK, ModelArtifact, Registry, RegistryError, TokenClassifier
from insightloop.detectors import (
    MIN_PROFILE_ROWS,
    Insight,
    ReferenceProfile,
    TrackerState,
    check_all,
    entity_check_step,
    texts_without,
    training_overlap,
    vocabulary_from_texts,
    write_entity_report,
    write_reports,
)
from insightloop.retrain import (
    DataFileError,
    Example,
    TaggedSentence,
    build_entity_profile,
    entity_window,
    iter_json_rows,
    load_profile,
    read_tagged,
    score_rows,
    scored_window,
)

log = logging.getLogger(__name__)


def add_check_parser(commands: Any) -> None:
    """Register `check`."""
    check = commands.add_parser("check", help="compare a current file with a reference file, offline")
    check.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="JSON Lines the model was trained for (a token classifier's: CoNLL or NER JSON Lines, labeled)",
    )
    add_task_option(check, "the model's task (default: read from the model; a mismatch is an error)", default=None)
    check.add_argument("--current", type=Path, required=True, help="JSON Lines to check")
    check.add_argument("--model", type=Path, required=True, help="a model version directory")
    check.add_argument("--json", action="store_true", help="print exactly one JSON object on standard output")
    check.add_argument(
        "--fail-on",
        choices=["info", "warning", "critical"],
        help="exit with code 7 when an insight is at least this severe",
    )
    check.add_argument(
        "--state-dir", type=Path, default=StateConfig().dir, help="working folder; reports go to <state-dir>/reports"
    )
    check.add_argument("--reports", type=Path, help="where reports go (default: <state-dir>/reports)")
    check.add_argument("--rounds", type=int, default=100, help="calibration rounds on the reference")
    check.add_argument("--limit", type=int, help="use at most this many rows of each file")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    check.add_argument(
        "--config", type=Path, help="YAML config whose input section maps the files' rows (default: text/label/id)"
    )


def run_check(args: argparse.Namespace) -> int:
    """Score both files, check, write reports, print, and set the exit code."""
    task = ModelArtifact.read_settings(args.model).task
    wanted = getattr(args, "task", None)
    if wanted is not None and wanted != task:
        raise DataError(f"{args.model} is a {task} model, not {wanted}")
    if task == TOKEN_TASK:
        return run_entity_check(args)
    mapping = MessageMapping.from_config(load_config(getattr(args, "config", None)).input)
    artifact = ModelArtifact.load(args.model)
    reference = mapping.read_examples(args.reference, limit=args.limit)
    current = mapping.read_examples(args.current, limit=args.limit)
    started = time.perf_counter()
    vocabulary, reference = _vocabulary_and_reference(args.model, reference)
    trained_on = trained_texts(args.model)
    seen = training_overlap([e.text for e in reference], trained_on)
    if seen.any():
        # Scoring rows that are dropped anyway would be wasted; the profile would drop them too.
        log.warning(
            "%d of the %d reference rows are texts %s was trained on; they are left out of the reference "
            "statistics (out-of-vocabulary share, confidence, scores, accuracy, embeddings): %d rows remain",
            int(seen.sum()),
            len(reference),
            args.model.name,
            int((~seen).sum()),
        )
        reference = [e for e, was_seen in zip(reference, seen, strict=True) if not was_seen]
        if len(reference) < MIN_PROFILE_ROWS:
            raise DataError(
                f"{args.reference}: only {len(reference)} rows are not in the model's training data; the "
                f"reference needs at least {MIN_PROFILE_ROWS} rows the model did not see (use held-out rows)"
            )
    reference_window = scored_window(artifact, reference)
    current_window = scored_window(artifact, current)
    scored = time.perf_counter()
    profile = ReferenceProfile.build(
        reference_window,
        vocabulary,
        n_rounds=args.rounds,
        seed=args.seed,
        max_length=artifact.max_length,
        window_size=len(current_window),
    )
    overlap_rows = int(seen.sum())
    version = args.model.resolve().name
    result = check_all(profile, current_window, version)
    checked = time.perf_counter()
    stem = f"check-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    reports_dir = args.reports if args.reports is not None else args.state_dir / "reports"
    reports = write_reports(profile, current_window, reports_dir, stem)
    html = next((str(p) for p in reports if p.suffix == ".html"), None)
    insights = [i.model_copy(update={"report": html}) for i in result.insights]
    log.info(
        "scored %d + %d texts in %.1f s; calibrated and checked in %.1f s",
        len(reference),
        len(current),
        scored - started,
        checked - scored,
    )
    note = None
    if overlap_rows:
        note = (
            f"note: {overlap_rows} reference rows were texts the model was trained on and were left out "
            f"of the reference ({len(reference)} rows used)"
        )
    return _report(args, insights, result.results, reports, note)


def _report(
    args: argparse.Namespace, insights: list[Insight], results: list[Any], reports: list[Path], note: str | None = None
) -> int:
    """Print the outcome (one JSON object with ``--json``, else a table) and the exit code ``--fail-on`` asks."""
    if args.json:
        payload = {
            "insights": [json.loads(i.model_dump_json()) for i in insights],
            "reports": [str(p) for p in reports],
        }
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        if note:
            print(note)
        _print_summary(insights, results, reports)
    if args.fail_on and any(i.at_least(args.fail_on) for i in insights):
        return int(ExitCode.CHECK_FAILED)
    return int(ExitCode.OK)


def run_entity_check(args: argparse.Namespace) -> int:
    """:func:`run_check` for a token classifier: the files are CoNLL or NER JSON Lines (labels optional in the
    current file, required in the reference), the entity detectors check, and the page is the project's own."""
    classifier = TokenClassifier.load(args.model)
    reference = [s for s in read_tagged(args.reference) if s.tags][: args.limit]
    current = read_tagged(args.current)[: args.limit]
    if not reference:
        raise DataError(f"{args.reference}: the reference needs labeled sentences (tags or entities)")
    reference, trained = _reference_and_known_names(args.model, reference)
    profile = build_entity_profile(classifier, reference, trained, window_size=len(current), n_rounds=args.rounds)
    window = entity_window(score_rows(classifier, current))
    version = args.model.resolve().name
    step = entity_check_step(profile, window, version, TrackerState(raise_level=1.0, clear_level=0.8, clear_after=2))
    reports: list[Path] = []
    insights = list(step.result.insights)
    if step.insight is not None:
        reports_dir = args.reports if args.reports is not None else args.state_dir / "reports"
        stem = f"check-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        reports += write_entity_report(
            step.insight, step.result, reports_dir / f"{stem}-entities.html", profile, window
        )
        insights = [i.model_copy(update={"report": str(reports[0])}) for i in insights]
    return _report(args, insights, list(step.result.results), reports)


def _reference_and_known_names(
    model: Path, reference: list[TaggedSentence]
) -> tuple[list[TaggedSentence], list[TaggedSentence]]:
    """The reference sentences to profile, and the sentences whose entity strings count as known names.

    As with the vocabulary (:func:`_vocabulary_and_reference`), known names must not come from the window
    they are compared with: they are the version's training data; for an imported version (its file is
    the reference it came with) or one whose data is unknown, every other reference sentence.
    """
    registry = Registry(model.resolve().parent)
    try:
        imported = registry.get(model.resolve().name).lineage.action == "import"
        data_file = None if imported else registry.training_data_file(model.resolve().name)
    except RegistryError:
        data_file = None
    if data_file is None:
        log.warning("%s: the names it was trained on are unknown; half of the reference gives them", model)
        return reference[0::2], reference[1::2]
    return reference, [s for s in read_tagged(data_file) if s.tags]


def _vocabulary_and_reference(model: Path, reference: list[Example]) -> tuple[Iterable[str], list[Example]]:
    """The vocabulary that out-of-vocabulary shares are measured against, and the reference rows to profile.

    The vocabulary must not come from the rows it is then compared with (their share would be 0 by
    construction and any other file would look drifted): it is the model version's training vocabulary
    when the version has a reference profile, otherwise that of every other reference row (the rest form
    the reference window).
    """
    try:
        return load_profile(model).vocabulary, reference
    except FileNotFoundError:
        log.warning("%s has no reference profile: half of the reference file gives the vocabulary", model)
        return vocabulary_from_texts(e.text for e in reference[1::2]), reference[0::2]


def trained_texts(model: Path) -> list[str]:
    """The texts ``model`` (a version directory) was trained on, as far as the registry records them.

    The version's training data file (``Registry.training_data_file``: its copy, else the source it was
    trained from) holds the rows trained on and the validation rows held out of training; the version's
    own reference profile is that validation split, so its texts are taken out (one occurrence each). An
    imported version was trained elsewhere: its file is the reference it came with, nothing it trained on.
    """
    registry = Registry(model.resolve().parent)
    try:
        record = registry.get(model.resolve().name)
        data_file = registry.training_data_file(model.resolve().name)
    except RegistryError as exc:
        log.warning("%s is not a version of a readable registry (%s): its training texts are unknown", model, exc)
        return []
    if record.lineage.action == "import" or data_file is None:
        return []
    try:
        texts = [row.get("text", "") for _, row in iter_json_rows(data_file)]
    except DataFileError as exc:
        log.warning("cannot read the training data of %s (%s): its training texts are unknown", model, exc)
        return []
    try:
        held_out = load_profile(model).window.texts
    except (FileNotFoundError, OSError, ValueError):
        held_out = []
    return texts_without([t for t in texts if isinstance(t, str)], held_out)


def _print_summary(insights: list[Insight], results: list[Any], reports: list[Path]) -> None:
    print(f"{'detector':<22} {'statistic':>10} {'threshold':>10} {'ratio':>7}  severity")
    for r in results:
        print(
            f"{r.detector:<22} {r.statistic:>10.4f} {r.threshold:>10.4f} {r.ratio:>7.2f}  "
            f"{r.severity or ('–' if r.applicable else 'n/a: ' + r.reason)}"
        )
    print()
    if not insights:
        print("No insight: the current file looks like the reference.")
    for insight in insights:
        print(f"[{insight.severity}] {insight.kind}: {insight.summary}")
        print(f"    recommendation: {insight.recommendation.action} — {insight.recommendation.because}")
        for example in insight.evidence.examples[:3]:
            print(f"    e.g. {example.id}: {example.text[:100]}")
    print()
    for path in reports:
        print(f"report: {path}")
