"""The demo's generated entity scenario: reproducible, every span on its words, and the shift it promises
(organisations named like the world desk's people and places)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from insightloop.daemon.entity_scenario import write_entity_scenario
from insightloop.retrain import TaggedSentence, read_tagged


def shares(sentences: list[TaggedSentence]) -> dict[str, float]:
    counts = Counter(e.type for s in sentences for e in s.entities)
    return {kind: n / sum(counts.values()) for kind, n in counts.items()}


def test_the_scenario_is_reproducible_and_its_second_desk_shifts_the_entity_mix(tmp_path: Path) -> None:
    before, stream = write_entity_scenario(tmp_path / "a")
    again, _ = write_entity_scenario(tmp_path / "b")
    assert before.read_bytes() == again.read_bytes()
    trained, streamed = read_tagged(before), read_tagged(stream)  # spans that miss word boundaries would raise
    assert (len(trained), len(streamed)) == (800, 1200) and all(s.tags for s in trained + streamed)
    assert len({s.id for s in trained + streamed}) == 2000
    early, late = streamed[:300], streamed[300:]
    assert abs(shares(early)["ORG"] - shares(trained)["ORG"]) < 0.05
    assert shares(late)["ORG"] > shares(trained)["ORG"] + 0.3
    # The new desk's organisations reuse the first words the model learned as people and places.
    first_words = {
        kind: {s.words[e.start].lower() for s in trained for e in s.entities if e.type == kind}
        for kind in ("PER", "LOC")
    }
    organisations = [s.words[e.start].lower() for s in late for e in s.entities if e.type == "ORG"]
    confusable = sum(w in first_words["PER"] | first_words["LOC"] for w in organisations) / len(organisations)
    assert confusable > 0.3
    # Documents arrive whole: each one's sentences are contiguous in the stream.
    order = [s.document for s in streamed]
    assert all(order.index(d) + order.count(d) - 1 == max(i for i, x in enumerate(order) if x == d) for d in set(order))
