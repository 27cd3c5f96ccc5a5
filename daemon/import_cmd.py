"""`insightloop models import`: put an existing classifier or entity recogniser under watch, with no fine-tuning.

The model keeps its own label names (``id2label``, in its head's order) and its tokenizer. The reference
file (held-out data, with or without labels) fits the embedding projection and becomes the version's
reference profile; without labels, the labeled detectors wait for production labels. The version is
smoke-tested, written through ``Registry.write_version`` with a lineage that says where it was imported
from and the checksum of its weights, and promoted, when asked, through
:class:`~insightloop.daemon.promotion.ModelService`, the audited path approvals take.

A retraining job later starts from the imported version and keeps its label set
(:func:`insightloop.retrain.fine_tune` keeps a base classifier's labels, and
:func:`insightloop.retrain.fine_tune_tokens` a base recogniser's tags).

A token classifier (``--task token-classification``, or read from its config) is imported the same way,
with a CoNLL or NER JSON Lines reference: its tags must be IOB (``O``, ``B-TYPE``, ``I-TYPE``), and the
entity strings the new-names detector counts as known come from the half of the reference that is not
its window, as nothing says what the model was trained on.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from insightloop.daemon.config import Config
from insightloop.daemon.errors import DataError, ExitCode, PermanentError
from insightloop.daemon.mapping import MessageMapping
from insightloop.daemon.promotion import ModelService, Publisher
from insightloop.daemon.task_option import add_task_option
from insightloop.deploy import (
    TOKEN_TASK,
    Lineage,
    ModelArtifact,
    ModelLoadError,
    Registry,
    SourceFile,
    TagSequenceError,
    Task,
    TokenClassifier,
    VersionDraft,
    VersionRecord,
    VersionStatus,
    parse_tag,
    pick_device,
    position_limit,
    utc_now,
)
from insightloop.detectors import macro_f1
from insightloop.retrain import (
    Example,
    TaggedSentence,
    build_entity_profile,
    build_profile,
    evaluate_tagger,
    fit_projection,
    read_tagged,
    write_jsonl,
    write_tagged_jsonl,
)

log = logging.getLogger(__name__)

PROMOTE_NOTE = "insightloop models import --promote"
#: Rows a reference needs: half give the vocabulary, the other half (at least 20) the profile's window.
MIN_REFERENCE_ROWS = 40
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")


class ImportRefusedError(PermanentError):
    """The model cannot be imported as it is (not a classifier of the task, unreadable); nothing was written."""

    exit_code = ExitCode.NO_MODEL


class ReferenceLabelsError(DataError):
    """The reference file names labels the model does not have; nothing was written."""


@dataclass(frozen=True)
class ImportSettings:
    """How an imported version is profiled."""

    max_length: int | None = None  # None: what the model and its tokenizer take
    projection_dims: int = 32
    profile_rounds: int = 200
    batch_size: int = 32
    seed: int = 0


def add_import_parser(actions: Any, add_common: Any) -> None:
    """Register `models import`."""
    parser = actions.add_parser(
        "import",
        help="register an existing transformers sequence or token classifier (no fine-tuning) with a reference file",
    )
    parser.add_argument("--model", required=True, help="a model directory, or a name transformers resolves")
    parser.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="JSON Lines of held-out texts (labels optional), read through the input mapping; for a token "
        "classifier CoNLL or NER JSON Lines",
    )
    add_task_option(parser, "the model's task (default: read from its config; a mismatch is an error)", default=None)
    parser.add_argument("--max-length", type=int, help="tokens per text (default: what the model takes)")
    parser.add_argument("--projection-dims", type=int, default=32, help="embedding projection width")
    parser.add_argument("--rounds", type=int, default=200, help="calibration rounds of the reference profile")
    parser.add_argument(
        "--promote", action="store_true", help="approve and promote it as `models approve` does (audited)"
    )
    parser.add_argument("--by", help="your name for the audit log (default: the login name)")
    add_common(parser, kafka=True, state=True)


def run_import(args: argparse.Namespace, config: Config) -> int:
    """Carry out `models import`; the last line printed is the new version's directory."""
    from insightloop.daemon.models_cmd import publisher_for

    if args.max_length is not None and args.max_length < 8:
        from insightloop.daemon.errors import UsageError

        raise UsageError("--max-length must be at least 8")
    settings = ImportSettings(
        max_length=args.max_length, projection_dims=args.projection_dims, profile_rounds=args.rounds
    )

    def publish(event: Any) -> None:  # connects once the version is promoted, not before the import
        send = publisher_for(config)
        if send is not None:
            send(event)

    path = import_model(
        args.model,
        args.reference,
        config.registry.path,
        settings,
        MessageMapping.from_config(config.input),
        task=args.task,
        promote=args.promote,
        by=args.by or getpass.getuser(),
        publish=publish if args.promote else None,
    )
    print(path, flush=True)
    return int(ExitCode.OK)


def model_task(config: Any, model: str, wanted: Task | None) -> Task:
    """The task a transformers config's architecture serves; ImportRefusedError when it serves neither, or not
    the ``wanted`` one."""
    architectures = [str(a) for a in (getattr(config, "architectures", None) or [])]
    found: Task | None = None
    if any(a.endswith("ForTokenClassification") for a in architectures):
        found = TOKEN_TASK
    elif any(a.endswith("ForSequenceClassification") for a in architectures):
        found = "text-classification"
    if found is None or (wanted is not None and found != wanted):
        kind = {None: "sequence classifier nor a token classifier", TOKEN_TASK: "token classifier"}.get(
            wanted, "sequence classifier"
        )
        recorded = ", ".join(architectures) or "no architecture recorded"
        raise ImportRefusedError(
            f"{model} is not a {kind} ({recorded}); import a model saved from an AutoModelForSequenceClassification "
            "or AutoModelForTokenClassification (its head and id2label are what insightloop serves)"
        )
    return found


def tagger_tags(config: Any, model: str, asked: bool = True) -> list[str]:
    """The IOB tags of a token-classification config, in the head's order; ImportRefusedError for any other
    (``asked``: the token task was asked for, rather than read from the architecture)."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    tags = [id2label.get(i, f"LABEL_{i}") for i in range(int(config.num_labels))]
    try:
        parsed = [parse_tag(tag, i) for i, tag in enumerate(tags)]
    except TagSequenceError:
        parsed = []
    if not parsed or ("O", None) not in parsed or len(set(tags)) != len(tags) or len(tags) < 2:
        detected = "" if asked else " is not a sequence classifier, and as a token classifier"
        raise ImportRefusedError(
            f"{model}:{detected} a token classifier's id2label must be distinct IOB tags (O, B-TYPE, I-TYPE); "
            f"it gives {tags}"
        )
    return tags


def classifier_labels(config: Any, model: str) -> list[str]:
    """The label names of a sequence-classification config, in the head's order; ImportRefusedError if it is not one."""
    model_task(config, model, "text-classification")
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    labels = [id2label.get(i, f"LABEL_{i}") for i in range(int(config.num_labels))]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ImportRefusedError(f"{model}: a classifier needs at least two distinct labels, id2label gives {labels}")
    return labels


def weights_sha256(model: str) -> tuple[str, str | None]:
    """Where the weights were read from and their SHA-256 (of the one file; of ``name:sha`` lines when sharded)."""
    root = Path(model)
    if not root.is_dir():
        try:
            from huggingface_hub import snapshot_download

            root = Path(snapshot_download(model, local_files_only=True))
        except Exception:  # not in the local cache: the name is all there is to record
            return model, None
    files = sorted(p for p in root.iterdir() if p.name in WEIGHT_FILES or p.name.startswith("model-0"))
    if not files:
        return str(root.resolve()), None
    digests = [(p.name, _sha256(p)) for p in files]
    if len(digests) == 1:
        return str(root.resolve()), digests[0][1]
    joined = "".join(f"{name}:{digest}\n" for name, digest in digests)
    return str(root.resolve()), hashlib.sha256(joined.encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_config(model: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model)
    except Exception as exc:  # transformers raises many types for a missing or broken model
        raise ImportRefusedError(f"cannot read the model config of {model}: {exc}") from exc


def _refuse_untrained(model: str, info: dict[str, Any]) -> None:
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing:
        raise ImportRefusedError(
            f"{model} lacks trained weights for {sorted(missing)[:5]}: its head would be random, not the model's own"
        )


def load_tagger(model: str, max_length: int | None, asked: bool = True) -> TokenClassifier:
    """The model and its (fast) tokenizer as a token classifier on the CPU, refusing anything untrained."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    config = _read_config(model)
    model_task(config, model, TOKEN_TASK)
    tags = tagger_tags(config, model, asked)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        loaded, info = AutoModelForTokenClassification.from_pretrained(model, output_loading_info=True)
    except Exception as exc:
        raise ImportRefusedError(f"cannot load {model} as a token classifier: {exc}") from exc
    _refuse_untrained(model, info)
    loaded.eval()
    limit = position_limit(loaded.config, tokenizer)
    try:
        return TokenClassifier(
            loaded, tokenizer, tags, min(max_length or limit, limit), pick_device("cpu"), {"base_model": model}
        )
    except ModelLoadError as exc:  # a slow tokenizer cannot map sub-tokens to words
        raise ImportRefusedError(f"{model}: {exc}") from exc


def load_classifier(model: str, max_length: int | None) -> ModelArtifact:
    """The model and tokenizer as an artifact (on the CPU), refusing anything that is not a trained classifier."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = classifier_labels(_read_config(model), model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        loaded, info = AutoModelForSequenceClassification.from_pretrained(model, output_loading_info=True)
    except Exception as exc:
        raise ImportRefusedError(f"cannot load {model} as a sequence classifier: {exc}") from exc
    _refuse_untrained(model, info)
    loaded.eval()
    limit = position_limit(loaded.config, tokenizer)
    return ModelArtifact(
        loaded,
        tokenizer,
        labels,
        None,
        min(max_length or limit, limit),
        pick_device("cpu"),
        info={"base_model": model, "imported": True},
    )


def check_reference_labels(examples: Sequence[Example], labels: Sequence[str], reference: Path) -> bool:
    """True when every row is labeled; ReferenceLabelsError when a label is not in ``labels``."""
    found = sorted({e.label for e in examples if e.label is not None})
    unknown = [label for label in found if label not in labels]
    if unknown:
        raise ReferenceLabelsError(
            f"{reference}: labels {unknown} are not in the model's label set {list(labels)} "
            "(the reference must use the model's own label names)"
        )
    return bool(found) and all(e.label is not None for e in examples)


def import_model(
    model: str,
    reference: Path,
    registry_path: Path,
    settings: ImportSettings = ImportSettings(),
    mapping: MessageMapping | None = None,
    task: Task | None = None,
    promote: bool = False,
    by: str | None = None,
    publish: Publisher | None = None,
) -> Path:
    """Register ``model`` as a new version profiled on ``reference``; return the version directory.

    ``task`` (None: what the model's config says) picks the classifier or the recogniser path."""
    by = by or getpass.getuser()
    if model_task(_read_config(model), model, task) == TOKEN_TASK:
        return import_tagger(model, reference, registry_path, settings, promote, by, publish, asked=task is not None)
    mapping = mapping or MessageMapping()
    examples = mapping.read_examples(reference)
    if len(examples) < MIN_REFERENCE_ROWS:
        raise DataError(f"{reference}: a reference needs at least {MIN_REFERENCE_ROWS} rows, found {len(examples)}")
    artifact = load_classifier(model, settings.max_length)
    labeled = check_reference_labels(examples, artifact.labels, reference)
    try:
        artifact.smoke_test()
    except ModelLoadError as exc:
        raise ImportRefusedError(f"{model}: {exc}") from exc
    texts = [e.text for e in examples]
    artifact.projection = fit_projection(artifact, texts[:2000], settings.projection_dims, settings.batch_size)
    # Out-of-vocabulary shares are measured against words the window did not give: every other row makes
    # the vocabulary, the rest the profile's window (as `check` does without a training file).
    window_rows, vocabulary_rows = list(examples[0::2]), list(examples[1::2])
    profile = build_profile(
        artifact, window_rows, [e.text for e in vocabulary_rows], seed=settings.seed, n_rounds=settings.profile_rounds
    )
    metrics = reference_metrics(artifact, examples) if any(e.label is not None for e in examples) else {}
    record = _import_record(
        model,
        list(artifact.labels),
        metrics,
        {"max_length": artifact.max_length, "projection_dims": settings.projection_dims},
    )
    draft = VersionDraft(
        record=record,
        save_artifact=artifact.save,
        save_profile=profile.save,
        # A fully labeled reference is what a retraining job mixes in as reference data (the version's
        # own training file); an unlabeled one needs controller.reference_data for that.
        save_training_data=(lambda path: write_jsonl(path, examples)) if labeled else None,
        sources=[SourceFile(role="reference", path=str(reference), rows=len(examples), holdout_rows=len(examples))],
        validation_rows=len(window_rows),
    )
    return _register(Registry(registry_path), draft, labeled, promote, by, publish)


def _import_record(model: str, labels: list[str], metrics: dict[str, float], settings: dict[str, Any]) -> VersionRecord:
    """The record of an imported version: where its weights came from and their checksum."""
    source, digest = weights_sha256(model)
    return VersionRecord(
        version="pending",
        created_at=utc_now(),
        status=VersionStatus.CANDIDATE,
        parent=None,
        base_model=model,
        labels=labels,
        metrics=metrics,
        lineage=Lineage(action="import", imported_from=source, imported_sha256=digest, settings=settings),
    )


def _register(
    registry: Registry,
    draft: VersionDraft,
    labeled: bool,
    promote: bool,
    by: str,
    publish: Publisher | None,
) -> Path:
    """Write the imported version as ``by``, maybe promote it through the audited path; its directory."""
    source = draft.record.lineage.imported_from
    created = registry.write_version(draft, by=by, reason=f"imported from {source}")
    log.info("registered %s, imported from %s (labels %s)", created.version, source, created.labels)
    if not labeled:
        log.warning(
            "%s has no labeled reference: labeled detectors wait for production labels, and retraining needs "
            "controller.reference_data",
            created.version,
        )
    if promote:
        ModelService(registry, publish).approve(created.version, by=by, note=PROMOTE_NOTE)
        log.info("promoted %s to production", created.version)
    return registry.path_of(created.version).resolve()


def check_reference_types(sentences: Sequence[TaggedSentence], tags: Sequence[str], reference: Path) -> bool:
    """True when every sentence is labeled; ReferenceLabelsError when one names a type the model lacks."""
    known = {kind for i, tag in enumerate(tags) if (kind := parse_tag(tag, i)[1])}
    unknown = sorted({span.type for s in sentences for span in s.entities} - known)
    if unknown:
        raise ReferenceLabelsError(
            f"{reference}: entity types {unknown} are not in the model's types {sorted(known)} "
            "(the reference must use the model's own type names)"
        )
    return all(s.tags for s in sentences)


def import_tagger(
    model: str,
    reference: Path,
    registry_path: Path,
    settings: ImportSettings,
    promote: bool,
    by: str,
    publish: Publisher | None,
    asked: bool = True,
) -> Path:
    """:func:`import_model` for a token classifier; the reference is CoNLL or NER JSON Lines (``asked``: the
    task was asked for, not read from the model)."""
    sentences = read_tagged(reference)
    if len(sentences) < MIN_REFERENCE_ROWS:
        raise DataError(
            f"{reference}: a reference needs at least {MIN_REFERENCE_ROWS} sentences, found {len(sentences)}"
        )
    classifier = load_tagger(model, settings.max_length, asked)
    labeled = check_reference_types(sentences, classifier.labels, reference)
    try:
        classifier.smoke_test()
    except ModelLoadError as exc:
        raise ImportRefusedError(f"{model}: {exc}") from exc
    # Entity strings count as known when the other half of the reference has them: what the model was
    # trained on is unknown, and the window's own names would make every other window look new.
    window_rows, name_rows = list(sentences[0::2]), list(sentences[1::2])
    profile = build_entity_profile(
        classifier, window_rows, name_rows, n_rounds=settings.profile_rounds, seed=settings.seed
    )
    scored = [s for s in sentences if s.tags]
    metrics = evaluate_tagger(classifier, scored, settings.batch_size).metrics("reference") if scored else {}
    record = _import_record(
        model, list(classifier.labels), metrics, {"max_length": classifier.max_length, "task": TOKEN_TASK}
    )
    draft = VersionDraft(
        record=record,
        save_artifact=classifier.save,
        save_profile=profile.save,
        save_training_data=(lambda path: write_tagged_jsonl(path, sentences)) if labeled else None,
        sources=[SourceFile(role="reference", path=str(reference), rows=len(sentences), holdout_rows=len(sentences))],
        validation_rows=len(window_rows),
    )
    return _register(Registry(registry_path), draft, labeled, promote, by, publish)


def reference_metrics(artifact: ModelArtifact, examples: Sequence[Example]) -> dict[str, float]:
    """Accuracy and macro-F1 of the model on the labeled rows of the reference (as it was imported)."""
    rows = [e for e in examples if e.label is not None]
    predicted = artifact.predict([e.text for e in rows]).predicted_labels()
    index = {label: i for i, label in enumerate(artifact.labels)}
    truth = np.array([index[str(e.label)] for e in rows])
    guess = np.array([index[p] for p in predicted])
    return {
        "reference_accuracy": float(np.mean(truth == guess)),
        "reference_macro_f1": float(macro_f1(truth, guess, len(artifact.labels))),
    }


__all__ = [
    "ImportRefusedError",
    "ImportSettings",
    "ReferenceLabelsError",
    "add_import_parser",
    "check_reference_labels",
    "check_reference_types",
    "classifier_labels",
    "import_model",
    "import_tagger",
    "load_tagger",
    "model_task",
    "run_import",
]
