"""The scorer's CPU numerics: which candidates a CPU gets, which one a measurement keeps, and the shells that
build, time and load them on a real (tiny) model, with ONNX Runtime's int8 keeping the artifact's contract."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from insightloop.daemon.config import ScorerConfig
from insightloop.daemon.scorer_numerics import (
    CandidateTrial,
    CpuFeatures,
    Kind,
    build_candidate,
    choose_numerics,
    forced_kind,
    load_at_precision,
    load_serving_artifact,
    measure_candidates,
    reference_texts,
    trial_token_ids,
    wanted_candidates,
)
from insightloop.daemon.scorer_onnx import OnnxArtifact, OnnxUnavailable, onnx_int8_artifact
from insightloop.deploy import ModelArtifact, Registry
from tests.synthetic import sentiment_rows

ZEN5 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 vaes\nbugs\t\t: none\n"
SAPPHIRE_RAPIDS = "flags\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "flags\t: fpu avx2 avx512f avx512bw\n"
ALDER_LAKE = "flags\t: fpu avx2 avx_vnni\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native_bf16", "native_int8", "auto_candidates"),
    [
        (ZEN5, True, True, ["float32", "bfloat16", "int8"]),
        (SAPPHIRE_RAPIDS, True, True, ["float32", "bfloat16", "int8"]),
        (SKYLAKE, False, False, ["float32", "int8"]),
        (ALDER_LAKE, False, True, ["float32", "int8"]),
        ("processor\t: 0\n", False, False, ["float32", "int8"]),  # no flags line: nothing assumed
    ],
)
def test_cpu_flags_decide_the_candidates(
    cpuinfo: str, native_bf16: bool, native_int8: bool, auto_candidates: list[str]
) -> None:
    features = CpuFeatures.parse(cpuinfo)
    assert (features.native_bf16, features.native_int8) == (native_bf16, native_int8)
    assert wanted_candidates(features, "auto", "auto") == auto_candidates
    assert wanted_candidates(features, False, False) == ["float32"]
    assert wanted_candidates(features, True, False) == ["float32", "bfloat16"], "true asks for bf16 anywhere"
    assert "vaes" not in features.describe() and "avx512_bf16 " in features.describe()


def trial(kind: Kind, seconds: float, agreement: float = 1.0) -> CandidateTrial:
    return CandidateTrial(kind=kind, seconds=seconds, agreement=agreement)


@pytest.mark.parametrize(
    ("trials", "chosen", "why"),
    [
        # The fastest agreeing candidate wins.
        ([trial("float32", 10), trial("bfloat16", 4, 0.999), trial("int8", 3, 0.985)], "int8", "int8 3.33x"),
        # int8 faster but its labels disagree: bf16.
        ([trial("float32", 10), trial("bfloat16", 4, 0.999), trial("int8", 3, 0.95)], "bfloat16", "below 98.0%"),
        # bf16 emulated (slower than float32), int8 not built: float32.
        ([trial("float32", 10), trial("bfloat16", 12, 1.0)], "float32", "not 1.10x faster"),
        # Faster, but within the margin that noise on a shared machine makes: float32.
        ([trial("float32", 10), trial("int8", 9.5, 1.0)], "float32", "not 1.10x faster"),
        # Exactly at the thresholds: kept.
        ([trial("float32", 11), trial("int8", 10, 0.98)], "int8", "chosen"),
        ([trial("float32", 10)], "float32", "the only candidate"),
        ([], "float32", "nothing was measured"),
    ],
)
def test_the_fastest_candidate_that_agrees_wins(trials: list[CandidateTrial], chosen: str, why: str) -> None:
    choice = choose_numerics(trials, min_speedup=1.1, min_agreement=0.98)
    assert choice.kind == chosen
    assert why in choice.reason


@pytest.mark.parametrize(
    ("available", "cpu_bf16", "quantize", "forced"),
    [
        (["float32", "bfloat16", "int8"], True, True, "int8"),
        (["float32", "bfloat16", "int8"], True, "auto", "bfloat16"),
        (["float32", "bfloat16"], "auto", True, None),  # int8 could not be built: measured instead
        (["float32", "bfloat16", "int8"], "auto", "auto", None),
        (["float32"], False, False, None),
    ],
)
def test_true_forces_a_candidate_that_was_built(
    available: list[Kind], cpu_bf16: bool | str, quantize: bool | str, forced: str | None
) -> None:
    assert forced_kind(available, cpu_bf16, quantize) == forced  # type: ignore[arg-type]


# -- the shells on a real tiny model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def version_dir(trained_registry: Path) -> Path:
    registry = Registry(trained_registry)
    version = registry.production()
    assert version is not None
    return registry.path_of(version)


TEXTS = [r["text"] for r in sentiment_rows(96, seed=11, prefix="n")]


def test_int8_graph_keeps_the_artifact_contract(version_dir: Path) -> None:
    fp32 = ModelArtifact.load(version_dir, device="cpu")
    attention = fp32.model.config._attn_implementation
    int8 = onnx_int8_artifact(fp32)
    assert fp32.model.config._attn_implementation == attention, "the export's eager attention is undone"
    assert isinstance(int8, OnnxArtifact) and int8.precision == "cpu/int8" and int8.quantized
    want, got = fp32.predict(TEXTS), int8.predict(TEXTS)
    assert got.labels == want.labels
    assert got.probabilities.shape == want.probabilities.shape
    np.testing.assert_allclose(got.probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(got.token_counts, want.token_counts)
    # The embeddings come from the same (quantised) pass, projected by the version's PCA: near float32's.
    assert got.embeddings.shape == want.embeddings.shape
    assert not np.array_equal(got.probabilities, want.probabilities), "int8 really computes differently"
    cosine = np.sum(got.embeddings * want.embeddings, axis=1) / (
        np.linalg.norm(got.embeddings, axis=1) * np.linalg.norm(want.embeddings, axis=1)
    )
    assert np.median(cosine) > 0.98
    assert np.abs(got.probabilities - want.probabilities).max() < 0.1
    assert np.mean(got.predicted_labels() == np.asarray(want.predicted_labels())) >= 0.95
    with pytest.raises(ValueError, match="cannot be saved"):
        int8.save(version_dir.parent / "nope")


def test_sessions_side_by_side_score_as_one_session(version_dir: Path, tmp_path: Path) -> None:
    from insightloop.daemon.scorer_onnx import (
        SESSION_TOKENS_PER_PASS,
        export_float32,
        quantize_encoder,
        session_of,
        sessions_of,
    )

    fp32 = ModelArtifact.load(version_dir, device="cpu")
    export_float32(fp32, tmp_path / "float32.onnx")
    quantize_encoder(tmp_path / "float32.onnx", tmp_path / "int8.onnx")
    graph = (tmp_path / "int8.onnx").read_bytes()
    one = OnnxArtifact(fp32, [session_of(graph, 2)], "int8")
    two = OnnxArtifact(fp32, sessions_of(graph, 2), "int8")
    assert len(one.sessions) == 1 and one.max_tokens_per_pass == fp32.max_tokens_per_pass
    assert len(two.sessions) == 2 and two.max_tokens_per_pass == 2 * SESSION_TOKENS_PER_PASS
    texts = [*TEXTS, TEXTS[0] * 12]  # one text as long as the model takes
    want, got = one.predict(texts), two.predict(texts)
    np.testing.assert_allclose(got.probabilities.sum(axis=1), 1.0, atol=1e-5)  # every chunk was scored
    np.testing.assert_array_equal(got.token_counts, want.token_counts)
    # Dynamic int8 scales each chunk's activations, so other chunks move the scores a little, not the labels.
    assert np.abs(got.probabilities - want.probabilities).max() < 0.05
    assert np.mean(got.predicted_labels() == np.asarray(want.predicted_labels())) >= 0.98
    # Results come back in input order, for a pass smaller than the sessions' share too.
    for part in (texts[::-1][:5], texts[:1], texts[3:6]):
        alone = two.predict(part)
        again = [texts.index(t) for t in part]
        assert np.abs(alone.probabilities - got.probabilities[again]).max() < 0.05
        assert alone.predicted_labels() == [got.predicted_labels()[i] for i in again]


def test_a_graph_without_encoder_layers_is_refused(version_dir: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from insightloop.daemon.scorer_onnx import quantize_encoder

    # A real ONNX graph whose only MatMul is outside any encoder scope (a family the quantiser does not know).
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.ones(8, dtype=np.float32).tolist())
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="/head/MatMul")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    onnx.save(helper.make_model(graph), tmp_path / "g.onnx")
    with pytest.raises(OnnxUnavailable, match="no encoder MatMul"):
        quantize_encoder(tmp_path / "g.onnx", tmp_path / "q.onnx")


def test_measuring_interleaves_the_candidates_on_the_same_texts(version_dir: Path) -> None:
    fp32 = ModelArtifact.load(version_dir, device="cpu")
    candidates: dict[Kind, ModelArtifact] = {k: build_candidate(fp32, k) for k in ("float32", "bfloat16", "int8")}
    ids = trial_token_ids(fp32, TEXTS, 48)
    assert len(ids) == 48 and ids == fp32.tokenize(TEXTS[:48])
    trials = {t.kind: t for t in measure_candidates(candidates, ids, 32)}
    assert set(trials) == {"float32", "bfloat16", "int8"}
    assert trials["float32"].agreement == 1.0
    labels = {k: np.asarray(a.predict_tokenized(ids).predicted_labels()) for k, a in candidates.items()}
    for kind in ("bfloat16", "int8"):
        assert trials[kind].agreement == pytest.approx(np.mean(labels[kind] == labels["float32"]))
    synthetic = trial_token_ids(fp32, ["", "  "], 10)  # no usable texts: seeded token ids of several lengths
    assert len(synthetic) == 10 and len({len(x) for x in synthetic}) > 1
    assert synthetic == trial_token_ids(fp32, [], 10), "the same ids every time"


def test_serving_artifact_is_chosen_by_measuring_and_logged(
    version_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(reference_texts(version_dir)) >= 32, "the trained version keeps its reference texts"
    caplog.set_level(logging.INFO, logger="insightloop.daemon.scorer_numerics")
    # A margin nothing reaches: measured, then float32.
    strict = ScorerConfig(device="cpu", numerics_min_speedup=1000.0, numerics_trial_texts=32)
    art = load_serving_artifact(version_dir, strict, features=CpuFeatures.parse(ZEN5))
    assert art.precision == "cpu/float32"
    assert "measured on 32 trial texts" in caplog.text and "not 1000.00x faster" in caplog.text
    assert "avx512_bf16 yes" in caplog.text
    # No margin and no agreement needed: whatever was fastest, and it names itself in the log.
    caplog.clear()
    loose = ScorerConfig(device="cpu", numerics_min_speedup=1.0, numerics_min_agreement=0.01, numerics_trial_texts=32)
    art = load_serving_artifact(version_dir, loose, features=CpuFeatures.parse(ZEN5))
    assert f"scoring {version_dir.name} in {art.precision.split('/')[1]}" in caplog.text
    # Forced and ruled out: nothing measured.
    caplog.clear()
    assert load_serving_artifact(version_dir, ScorerConfig(device="cpu", quantize=True)).precision == "cpu/int8"
    off = ScorerConfig(device="cpu", quantize=False, cpu_bf16=False)
    assert load_serving_artifact(version_dir, off).precision == "cpu/float32"
    assert "measured" not in caplog.text


def test_reference_rescoring_uses_the_scorers_own_numerics(version_dir: Path) -> None:
    serving = load_serving_artifact(version_dir, ScorerConfig(device="cpu", quantize=True))
    again = load_at_precision(version_dir, "cpu", "int8")
    assert again.precision == serving.precision == "cpu/int8"
    np.testing.assert_allclose(again.predict(TEXTS).probabilities, serving.predict(TEXTS).probabilities, atol=1e-6)
    assert load_at_precision(version_dir, "cpu", "bfloat16").precision == "cpu/bfloat16"
    assert load_at_precision(version_dir, "cpu", "float32").precision == "cpu/float32"
