"""The model artifact: one forward pass gives probabilities and embeddings; save/load round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from insightloop.deploy import ModelArtifact, ModelLoadError, Projection, Registry
from insightloop.deploy.artifact import MAX_WINDOWS, head_tail, windows

TEXTS = ["great", "this product is awful and broken, what a terrible thing to buy", "ok", "love it, perfect"]


@pytest.fixture(scope="module")
def artifact(trained_registry: Path) -> ModelArtifact:
    registry = Registry(trained_registry)
    return ModelArtifact.load(registry.path_of(registry.production() or ""), device="cpu")


def test_predict_gives_probabilities_and_projected_embeddings(artifact: ModelArtifact) -> None:
    batch = artifact.predict(TEXTS, batch_size=2)
    assert batch.probabilities.shape == (4, 2)
    assert np.allclose(batch.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert batch.embeddings.shape == (4, artifact.embedding_dim) == (4, 8)
    assert batch.token_counts[0] < batch.token_counts[1]
    assert batch.predicted_labels()[1] == "negative" and batch.predicted_labels()[3] == "positive"


def test_length_sorted_batches_return_rows_in_input_order(artifact: ModelArtifact) -> None:
    together = artifact.predict(TEXTS, batch_size=3)
    for i, text in enumerate(TEXTS):
        alone = artifact.predict([text], batch_size=1)
        assert np.allclose(alone.probabilities[0], together.probabilities[i], atol=1e-5)
        assert np.allclose(alone.embeddings[0], together.embeddings[i], atol=1e-4)


def test_one_forward_pass_per_chunk(artifact: ModelArtifact) -> None:
    calls = []
    handle = artifact.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        artifact.predict(TEXTS, batch_size=2)
    finally:
        handle.remove()
    assert len(calls) == 2  # two chunks of two texts, each scored and embedded by a single pass


def test_save_and_load_round_trip(artifact: ModelArtifact, tmp_path: Path) -> None:
    artifact.save(tmp_path / "copy")
    loaded = ModelArtifact.load(tmp_path / "copy", device="cpu")
    assert loaded.labels == artifact.labels and loaded.max_length == artifact.max_length
    a, b = artifact.predict(TEXTS), loaded.predict(TEXTS)
    assert np.allclose(a.probabilities, b.probabilities, atol=1e-6)
    assert np.allclose(a.embeddings, b.embeddings, atol=1e-5)
    loaded.smoke_test()


def test_broken_directories_raise_model_load_error(tmp_path: Path, artifact: ModelArtifact) -> None:
    with pytest.raises(ModelLoadError, match=r"artifact\.json"):
        ModelArtifact.load(tmp_path)
    artifact.save(tmp_path / "broken")
    (tmp_path / "broken" / "model" / "model.safetensors").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        ModelArtifact.load(tmp_path / "broken", device="cpu")


def test_projection_keeps_the_main_directions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 6)).astype(np.float32) * np.array([10, 5, 1, 0.1, 0.1, 0.1], dtype=np.float32)
    projection = Projection.fit(data, 2)
    out = projection.transform(data)
    assert out.shape == (500, 2)
    assert out[:, 0].var() > out[:, 1].var() > data[:, 2].var()
    projection.save(tmp_path / "p.npz")
    again = Projection.load(tmp_path / "p.npz")
    assert np.allclose(again.transform(data), out)
    with pytest.raises(ValueError):
        Projection.fit(data[:1], 2)


def test_cuda_attention_leaves_out_cudnn_and_restores_the_setting() -> None:
    """cuDNN attention builds a plan per new batch shape (10x slower bf16 scoring on an H200): kept out on CUDA."""
    import torch

    from insightloop.deploy.artifact import attention_kernels

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with attention_kernels(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()  # padding masks need it
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with attention_kernels(torch.device("cpu")):  # CPU kernels are left as they are
        assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_a_micro_batch_is_one_forward_pass_on_cuda_and_length_sorted_passes_on_a_cpu() -> None:
    import torch

    from insightloop.deploy.artifact import forward_batch_size

    assert forward_batch_size(torch.device("cpu"), 32, 64) == 32
    assert forward_batch_size(torch.device("cuda"), 32, 64) == 64
    assert forward_batch_size(torch.device("cuda"), 128, 64) == 128  # never below what was asked for


# ids, budget, expected: the first quarter of the budget from the beginning, the rest from the end
HEAD_TAIL_CASES: list[tuple[list[int], int, list[int]]] = [
    (list(range(10)), 4, [0, 7, 8, 9]),
    (list(range(10)), 8, [0, 1, 4, 5, 6, 7, 8, 9]),
    (list(range(10)), 10, list(range(10))),  # fits: unchanged
    ([1, 2, 3], 8, [1, 2, 3]),
    (list(range(10)), 1, [9]),  # a one-token budget keeps the end
    ([], 4, []),
]


@pytest.mark.parametrize(("ids", "budget", "expected"), HEAD_TAIL_CASES)
def test_head_tail_keeps_a_quarter_from_the_beginning_and_the_rest_from_the_end(
    ids: list[int], budget: int, expected: list[int]
) -> None:
    kept = head_tail(ids, budget)
    assert kept == expected and len(kept) == min(len(ids), budget)


def test_head_tail_truncation_keeps_the_texts_beginning_and_end_and_survives_a_save(
    artifact: ModelArtifact, tmp_path: Path
) -> None:
    long_text = "opening words " + " ".join(f"filler{i}" for i in range(200)) + " the verdict: awful"
    artifact.save(tmp_path / "head")
    head = ModelArtifact.load(tmp_path / "head", device="cpu")
    assert head.truncation == "head"
    head_tail_model = ModelArtifact(
        head.model, head.tokenizer, head.labels, head.projection, head.max_length, truncation="head_tail"
    )
    full = head.tokenizer(long_text, add_special_tokens=False, verbose=False)["input_ids"]
    cls, sep = head.tokenizer.cls_token_id, head.tokenizer.sep_token_id
    (ids,) = head_tail_model.tokenize([long_text])
    budget = head.max_length - 2
    assert len(ids) == head.max_length
    assert ids[0] == cls and ids[-1] == sep
    assert ids[1 : 1 + budget // 4] == full[: budget // 4], "the beginning is kept"
    assert ids[1 + budget // 4 : -1] == full[-(budget - budget // 4) :], "the end is kept: the verdict is there"
    (head_ids,) = head.tokenize([long_text])
    assert head_ids[-2] == full[head.max_length - 3] and head_ids[-2] != ids[-2], "head-only loses the end"
    for short in TEXTS:  # texts that fit are tokenised the same either way
        assert head_tail_model.tokenize([short]) == head.tokenize([short])

    head_tail_model.save(tmp_path / "head_tail")
    assert ModelArtifact.read_settings(tmp_path / "head_tail").truncation == "head_tail"
    loaded = ModelArtifact.load(tmp_path / "head_tail", device="cpu")
    assert loaded.truncation == "head_tail" and loaded.tokenize([long_text]) == [ids], "what serves is what was saved"
    with pytest.raises(ValueError, match="truncation must be one of"):
        ModelArtifact(head.model, head.tokenizer, head.labels, None, 32, truncation="tail")  # type: ignore[arg-type]


def test_a_version_saved_before_the_truncation_policy_keeps_the_beginning(
    artifact: ModelArtifact, tmp_path: Path
) -> None:
    import json

    artifact.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "artifact.json"
    meta = json.loads(meta_path.read_text())
    del meta["truncation"]
    meta_path.write_text(json.dumps(meta))
    assert ModelArtifact.read_settings(tmp_path / "old").truncation == "head"
    assert ModelArtifact.load(tmp_path / "old", device="cpu").truncation == "head"


# length, window, max windows, expected (start, end) pairs
WINDOW_CASES = [
    (10, 4, 8, [(0, 4), (2, 6), (4, 8), (6, 10)]),  # half overlap, beginning to end
    (11, 4, 8, [(0, 4), (2, 6), (4, 8), (5, 9), (7, 11)]),  # spread evenly when the stride does not divide
    (4, 4, 8, [(0, 4)]),  # fits: one window
    (0, 4, 8, [(0, 0)]),
    (100, 10, 3, [(0, 10), (45, 55), (90, 100)]),  # capped: spread over the whole text
    (100, 10, 1, [(0, 10)]),  # one window: the beginning
]


@pytest.mark.parametrize(("length", "window", "most", "expected"), WINDOW_CASES)
def test_windows_cover_the_beginning_and_the_end_and_overlap(
    length: int, window: int, most: int, expected: list[tuple[int, int]]
) -> None:
    found = windows(length, window, most)
    assert found == expected
    assert all(end - start == min(window, length) for start, end in found) and len(found) <= most


def test_chunks_read_a_long_text_whole_as_windows_whose_scores_are_averaged(
    artifact: ModelArtifact, tmp_path: Path
) -> None:
    long_text = "opening words " + " ".join(f"filler{i}" for i in range(60)) + " the verdict: awful"
    chunks = ModelArtifact(
        artifact.model,
        artifact.tokenizer,
        artifact.labels,
        artifact.projection,
        artifact.max_length,
        truncation="chunks",
    )
    (ids,) = chunks.tokenize([long_text])
    full = artifact.tokenizer(long_text, verbose=False)["input_ids"]
    assert ids == full, "nothing is cut"
    rows, owners = chunks.split_windows([ids])
    assert 1 < len(rows) <= MAX_WINDOWS and owners.tolist() == [0] * len(rows)
    assert all(len(r) <= artifact.max_length and r[0] == full[0] and r[-1] == full[-1] for r in rows)
    assert rows[0][:-1] == full[: artifact.max_length - 1], "the first window is the text's beginning"
    assert rows[-1][1:] == full[-(artifact.max_length - 1) :], "the last window is its end"

    pooled = chunks.predict([long_text, *TEXTS], batch_size=3)
    windows_alone = artifact.predict_tokenized(rows, batch_size=1)  # each window as a text of its own (head fits)
    assert np.allclose(pooled.probabilities[0], windows_alone.probabilities.mean(axis=0), atol=1e-5)
    assert not np.allclose(pooled.probabilities[0], artifact.predict([long_text]).probabilities[0], atol=1e-4)
    assert pooled.token_counts[0] == len(full), "the whole text's length, not a window's"
    head = artifact.predict(TEXTS)
    assert np.allclose(pooled.probabilities[1:], head.probabilities, atol=1e-5), "texts that fit: as before"
    assert np.allclose(pooled.embeddings[1:], head.embeddings, atol=1e-4)

    chunks.save(tmp_path / "chunks")
    assert ModelArtifact.read_settings(tmp_path / "chunks").truncation == "chunks"
    loaded = ModelArtifact.load(tmp_path / "chunks", device="cpu")
    assert (loaded.truncation, loaded.max_windows) == ("chunks", MAX_WINDOWS)
    assert np.allclose(loaded.predict([long_text]).probabilities, pooled.probabilities[:1], atol=1e-5)
