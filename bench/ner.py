"""Named-entity recognition on CoNLL-2003: fine-tune on ``eng.train``, score entities on ``eng.testa``.

The packaged all-MiniLM-L6-v2 (uncased) is fine-tuned as a token classifier by the project's own
``retrain.fine_tune_tokens`` (each word's tag on its first sub-token; the best epoch by entity-level micro F1
on a 10% split of the training sentences, so ``eng.testa`` stays unseen until the end), then scored on the
development file with ``retrain.entity_report`` (entities as seqeval counts them: type and both boundaries).
Prints the per-type table with micro, macro and weighted averages, the time of each epoch on this machine's
devices, and a last line ``ner: micro_f1=X macro_f1=X epochs=N train_s=S``.

    python bench/ner.py                       # full eng.train, 3 epochs
    python bench/ner.py --limit 2000 --epochs 2
    python bench/ner.py --smoke               # a tiny BERT on 300 sentences (for tests: its figures mean little)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "conll2003"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=DATA / "eng.train", help="CoNLL training file (IOB1)")
    parser.add_argument("--dev", type=Path, default=DATA / "eng.testa", help="CoNLL file scored at the end")
    parser.add_argument("--base", help="base model (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--limit", type=int, help="at most this many training sentences")
    parser.add_argument("--dev-limit", type=int, help="at most this many development sentences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, help="write the trained classifier here")
    parser.add_argument("--smoke", action="store_true", help="a tiny BERT, 300 training and 200 dev sentences")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    import torch

    from insightloop.deploy import set_cpu_threads
    from insightloop.retrain import (
        FineTuneSettings,
        default_base_model,
        entity_report,
        fine_tune_tokens,
        read_conll,
        save_tiny_bert,
    )

    threads = set_cpu_threads(None)
    if args.smoke:
        args.limit, args.dev_limit = args.limit or 300, args.dev_limit or 200
        args.epochs, args.learning_rate, args.max_length = 2, 5e-3, 64
        base = str(save_tiny_bert(Path(tempfile.mkdtemp(prefix="insightloop-ner-")) / "tiny"))
    else:
        base = args.base or default_base_model()
    train = read_conll(args.train, limit=args.limit)
    dev = read_conll(args.dev, limit=args.dev_limit)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"train: {args.train.name} {len(train)} sentences, {sum(len(s.words) for s in train)} words; "
        f"dev: {args.dev.name} {len(dev)} sentences, {sum(len(s.entities) for s in dev)} entities",
        flush=True,
    )
    print(
        f"machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {threads} torch threads, "
        f"device {device}{' ' + torch.cuda.get_device_name(0) if device == 'cuda' else ''}; base {base}",
        flush=True,
    )
    settings = FineTuneSettings(
        epochs=args.epochs,
        max_length=args.max_length,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=device,
        early_stopping_patience=args.epochs,
    )
    started = time.perf_counter()
    result = fine_tune_tokens(train, base, settings, progress=not args.smoke)
    train_s = time.perf_counter() - started
    for epoch, seconds in enumerate(result.epoch_seconds, start=1):
        print(f"epoch {epoch}: {seconds:.1f} s on {device} ({result.train_sentences / seconds:.1f} sentences/s)")
    print(f"validation (10% of the training sentences) micro F1 of the kept epoch: {result.report.micro.f1:.4f}")
    scored = time.perf_counter()
    predicted = result.classifier.predict([s.words for s in dev], batch_size=64).tags
    report = entity_report([s.tags for s in dev], predicted)
    print(f"\nentity-level scores on {args.dev.name} ({time.perf_counter() - scored:.1f} s to tag it):\n")
    print(report.table())
    if args.save:
        result.classifier.save(args.save)
        print(f"\nsaved to {args.save}")
    print(
        f"ner: micro_f1={report.micro.f1:.4f} macro_f1={report.macro.f1:.4f} epochs={result.epochs_run} "
        f"train_s={train_s:.0f}"
    )


if __name__ == "__main__":
    main()
