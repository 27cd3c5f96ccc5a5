"""CoNLL and JSON Lines NER files read into one shape; counts checked against the data set's own README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from insightloop.deploy import convert_tags
from insightloop.retrain import DataFileError, entity_types, read_conll, read_ner_jsonl, tag_counts

CONLL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "conll2003"
needs_conll = pytest.mark.skipif(not (CONLL / "eng.testa").is_file(), reason=f"CoNLL-2003 not found at {CONLL}")


@needs_conll
def test_the_conll_development_file_reads_as_its_readme_counts_it() -> None:
    sentences = read_conll(CONLL / "eng.testa")
    # ../shared/data/README.md: 216 documents, 3,250 sentences, 51,362 tokens; IOB1 tag counts below.
    assert len(sentences) == 3250
    assert sum(len(s.words) for s in sentences) == 51362
    assert len({s.document for s in sentences}) == 216
    # The README's I- counts, and its 4 B- tags (all MISC here).
    iob1 = {"O": 42759, "I-PER": 3149, "I-LOC": 2094, "I-ORG": 2092, "I-MISC": 1264, "B-MISC": 4}
    assert tag_counts(sentences, "IOB1") == iob1
    assert entity_types(sentences) == ["LOC", "MISC", "ORG", "PER"]
    assert sentences[0].words[:3] == ["CRICKET", "-", "LEICESTERSHIRE"]
    # The tags come back as IOB2 and name the same entities as the file's IOB1.
    iob2 = tag_counts(sentences, "IOB2")
    assert all(tag == "O" or tag[:2] in ("B-", "I-") for tag in iob2)
    assert sum(n for tag, n in iob2.items() if tag.startswith("B-")) == sum(len(s.entities) for s in sentences)
    raw = [line.split() for line in (CONLL / "eng.testa").read_text(encoding="utf-8").splitlines()]
    file_tags = [cols[-1] for cols in raw if cols and cols[0] != "-DOCSTART-"]
    # The development set's entities as the CoNLL-2003 paper counts them (Tjong Kim Sang & De Meulder, table 2).
    per_type = {
        kind: sum(e.type == kind for s in sentences for e in s.entities) for kind in ("LOC", "MISC", "ORG", "PER")
    }
    assert per_type == {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}
    # Written back as IOB1, the tags are the file's own, word for word.
    assert [t for s in sentences for t in convert_tags(s.tags, "IOB1")] == file_tags


@needs_conll
def test_the_conll_training_file_holds_every_sentence() -> None:
    sentences = read_conll(CONLL / "eng.train")
    assert len(sentences) == 14041
    assert sum(len(s.words) for s in sentences) == 203621
    assert len({s.document for s in sentences}) == 946
    assert len({s.id for s in sentences}) == 14041


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("EU NNP I-NP I-ORG\nrejects\n", ":2: expected a word and a tag"),
        ("EU NNP I-NP I-ORG\nrejects VBZ I-VP Q-X\n", ":1: tag 1: 'Q-X'"),
        ("\n\n-DOCSTART- -X- O O\n\n", "no sentences"),
    ],
)
def test_a_broken_conll_file_is_refused_naming_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.conll"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFileError, match=message):
        read_conll(path)


def write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_json_lines_shape_gives_the_same_sentence(tmp_path: Path) -> None:
    text = "Peter Blackburn met the EU in Brussels."
    shapes = [
        {"id": "a", "text": text, "tags": ["I-PER", "I-PER", "O", "O", "I-ORG", "O", "I-LOC", "O"]},
        {
            "id": "a",
            "text": text,
            "entities": [
                {"start": 0, "end": 15, "type": "PER"},
                {"start": 24, "end": 26, "type": "ORG"},
                {"start": 30, "end": 38, "type": "LOC"},
            ],
        },
        {
            "id": "a",
            "tokens": ["Peter", "Blackburn", "met", "the", "EU", "in", "Brussels", "."],
            "tags": ["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O"],
        },
        {
            "id": "a",
            "tokens": ["Peter", "Blackburn", "met", "the", "EU", "in", "Brussels", "."],
            "entities": [
                {"start": 0, "end": 15, "type": "PER"},
                {"start": 24, "end": 26, "type": "ORG"},
                {"start": 30, "end": 38, "type": "LOC"},
            ],
        },
    ]
    sentences = [read_ner_jsonl(write(tmp_path / f"{i}.jsonl", [row]))[0] for i, row in enumerate(shapes)]
    assert {tuple(s.tags) for s in sentences} == {("B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O")}
    assert {tuple(s.words) for s in sentences} == {("Peter", "Blackburn", "met", "the", "EU", "in", "Brussels", ".")}


def test_labels_in_their_own_file_join_on_id(tmp_path: Path) -> None:
    texts = write(tmp_path / "texts.jsonl", [{"id": 1, "text": "Rome fell"}, {"id": 2, "text": "nothing here"}])
    labels = write(tmp_path / "labels.jsonl", [{"id": "1", "entities": [{"start": 0, "end": 4, "type": "LOC"}]}])
    first, second = read_ner_jsonl(texts, labels)
    assert (first.id, first.tags) == ("1", ["B-LOC", "O"])
    assert second.tags == []  # unlabeled
    orphan = write(tmp_path / "orphan.jsonl", [{"id": "9", "tags": ["O"]}])
    with pytest.raises(DataFileError, match="1 labels name no text"):
        read_ner_jsonl(texts, orphan)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "a", "text": "Rome fell", "tags": ["I-LOC"]}, ":1: 1 tags for 2 words"),
        ({"id": "a", "text": "Rome fell", "entities": [{"start": 0, "end": 3, "type": "LOC"}]}, "word boundaries"),
        ({"id": "a", "text": "Rome", "tokens": ["Rome"]}, "'text' or 'tokens', not both"),
        ({"id": "a", "text": "Rome", "tags": ["O"], "entities": []}, "'tags' or 'entities', not both"),
        ({"id": "a", "tokens": ["Rome", " "]}, "without surrounding whitespace"),
        ({"text": "Rome"}, "id: Field required"),
        ({"id": "a", "text": "Rome", "tags": ["LOC"]}, "tag 0: 'LOC'"),
    ],
)
def test_a_bad_json_lines_row_is_refused_naming_the_line(tmp_path: Path, row: dict[str, object], message: str) -> None:
    with pytest.raises(DataFileError, match=message):
        read_ner_jsonl(write(tmp_path / "bad.jsonl", [row]))
