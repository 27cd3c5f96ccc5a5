"""The demo's built-in entity scenario: news sentences generated here (no third-party data), from two desks.

Before the change, traffic is the world desk: politicians, capitals, ministries and nationalities, in prose.
After it, the markets and sports desk joins the feed (three sentences in five): companies named after their
founders ("Halvorsen Group") and clubs named after their towns ("Marston Rovers"), in prose and in results
lines ("Marston Rovers 2 Kelby Athletic 1"). A recogniser trained on the world desk has learned that a
surname is a person and a town a place, so the organisations of the new desk come out as people and places:
the entity-type mix shifts towards ORG and entity F1 drops, the way a news model's does when a new section
starts feeding it.

Every row is ``{"id", "text", "entities": [{"start", "end", "type"}], "document"}`` (character spans of the
raw text), which ``train``, ``replay`` and ``check`` read; everything is drawn from one
``random.Random(seed)``, so the same seed writes the same files.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from insightloop.daemon.scenario import write_rows

FIRST_NAMES = [
    "Anna", "Boris", "Carlos", "Dana", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kwame", "Lena",
    "Mateo", "Nadia", "Omar", "Petra", "Rafael", "Sofia", "Tomas", "Yara", "Viktor", "Wen", "Zofia", "Idris",
]  # fmt: skip
SURNAMES = [
    "Halvorsen", "Okafor", "Brandt", "Moreau", "Tanaka", "Kovacs", "Lindqvist", "Petrov", "Santos", "Nowak",
    "Haddad", "Fischer", "Ruiz", "Marsh", "Oyelaran", "Keller", "Dimitrov", "Varga", "Costa", "Jensen",
    "Whitcombe", "Abara", "Lenz", "Mbeki", "Kessler", "Duval", "Rossi", "Aalto", "Sato", "Quinn",
]  # fmt: skip
CAPITALS = [
    "Vienna", "Lisbon", "Nairobi", "Ankara", "Hanoi", "Lima", "Oslo", "Warsaw", "Dakar", "Manila", "Quito",
    "Riga", "Tunis", "Accra", "Bogota", "Seoul", "Prague", "Amman", "Dublin", "Harare",
]  # fmt: skip
COUNTRIES = [
    "Austria", "Portugal", "Kenya", "Turkey", "Vietnam", "Peru", "Norway", "Poland", "Senegal", "Chile",
    "Ecuador", "Latvia", "Ghana", "Colombia", "Ireland", "Jordan", "Greece", "Canada",
]  # fmt: skip
NATIONALITIES = [
    "Austrian", "Portuguese", "Kenyan", "Turkish", "Peruvian", "Norwegian", "Polish", "Chilean", "Irish",
    "Greek", "Canadian", "Ghanaian",
]  # fmt: skip
EVENTS = ["World Cup", "Olympic Games", "Nobel Prize", "Geneva Convention", "Paris Agreement", "Tour de France"]
INSTITUTIONS = [
    "United Nations", "European Union", "World Bank", "Red Cross", "Interior Ministry", "Supreme Court",
    "Foreign Ministry", "Central Bank", "NATO", "African Union",
]  # fmt: skip
TOWNS = [
    "Marston", "Kelby", "Ardmore", "Fenwick", "Halbury", "Corrin", "Westley", "Brackton", "Dunmore", "Ellison",
    "Garrow", "Tilford", "Oakham", "Redcliff", "Stanwick", "Vale",
]  # fmt: skip
CLUB_SUFFIXES = ["United", "Rovers", "Athletic", "Town", "City", "Wanderers", "Albion", "FC"]
COMPANY_SUFFIXES = ["Group", "Holdings", "Capital", "Motors", "Partners", "Industries", "Energy", "Bank"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# Slots: {PER} {LOC} {ORG} {NAT} {EVENT} {CO} {CLUB} are entities (NAT and EVENT are MISC, CO and CLUB ORG);
# {N} is a number, {DAY} a weekday, {S} a goal count and {WIN} a winning score ("3-1").
WORLD = [
    "{PER} arrived in {LOC} on {DAY} for talks with {PER}.",
    "{NAT} officials said {PER} would visit {LOC} next week.",
    "The {ORG} said in a statement that {PER} had resigned.",
    "{PER}, the {NAT} foreign minister, met {PER} in {LOC}.",
    "Police in {LOC} said {N} people were hurt in the protest.",
    "{PER} told reporters in {LOC} that the {EVENT} would go ahead.",
    "{LOC} and {LOC} agreed on {DAY} to reopen their border.",
    "Opposition leader {PER} called for early elections in {LOC}.",
    "The {ORG} will send {N} observers to {LOC}, {PER} said.",
    "{PER} won the {EVENT} for her work on refugees in {LOC}.",
    "Thousands marched through {LOC} on {DAY} to support {PER}.",
    "A {NAT} court in {LOC} jailed {PER} for {N} years.",
    "{PER} flew from {LOC} to {LOC} to brief the {ORG}.",
    "Talks between {LOC} and the {ORG} ended without a deal.",
    "{PER} said the storm had cut power to {N} homes near {LOC}.",
]
MARKETS = [
    "Shares in {CO} rose {N} percent after it agreed to buy {CO}.",
    "{CO} said on {DAY} its quarterly profit fell to {N} million.",
    "Analysts at {CO} expect {CO} to cut {N} jobs.",
    "{CO} chief executive {PER} said demand in {LOC} was weak.",
    "{CO} and {CO} called off their merger on {DAY}.",
    "{CO} shares closed {N} cents lower.",
]
SPORTS = [
    "{CLUB} beat {CLUB} {WIN} on {DAY}.",
    "{PER} scored twice as {CLUB} won at {CLUB}.",
    "{CLUB} sacked manager {PER} after a {WIN} defeat by {CLUB}.",
    "{CLUB} {S} {CLUB} {S}",
    "{CLUB} {S} {CLUB} {S}",
    "{CLUB} signed striker {PER} from {CLUB}.",
]
SLOT = re.compile(r"\{(\w+)\}")
TYPES = ("PER", "LOC", "ORG", "MISC")
NOISE = 0.03  # entities whose label is dropped or of another type: real annotation has mistakes in it


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}" if rng.random() < 0.7 else rng.choice(SURNAMES)


def _filler(rng: random.Random, slot: str) -> tuple[str, str | None]:
    """The text of one slot and its entity type (None: not an entity)."""
    if slot == "PER":
        return _person(rng), "PER"
    if slot == "LOC":
        return rng.choice(CAPITALS if rng.random() < 0.6 else COUNTRIES), "LOC"
    if slot == "NAT":
        return rng.choice(NATIONALITIES), "MISC"
    if slot == "EVENT":
        return rng.choice(EVENTS), "MISC"
    if slot == "ORG":
        return rng.choice(INSTITUTIONS), "ORG"
    if slot == "CO":  # named after founders: the words a world-desk model reads as a person
        if rng.random() < 0.25:
            return f"{rng.choice(SURNAMES)} & {rng.choice(SURNAMES)}", "ORG"
        return f"{rng.choice(SURNAMES)} {rng.choice(COMPANY_SUFFIXES)}", "ORG"
    if slot == "CLUB":  # named after towns, some of them capitals: read as a place
        town = rng.choice(TOWNS) if rng.random() < 0.7 else rng.choice(CAPITALS)
        return f"{town} {rng.choice(CLUB_SUFFIXES)}", "ORG"
    if slot == "N":
        return str(rng.choice([2, 3, 5, 7, 12, 15, 40, 120, 300, 1500])), None
    if slot == "S":
        return str(rng.randint(0, 4)), None
    if slot == "WIN":
        winner = rng.randint(1, 4)
        return f"{winner}-{rng.randint(0, winner - 1)}", None
    if slot == "DAY":
        return rng.choice(DAYS), None
    raise ValueError(f"unknown slot {slot!r}")


def sentence(rng: random.Random, template: str) -> tuple[str, list[dict[str, object]]]:
    """One sentence of ``template`` with its entities as character spans."""
    text, entities, cursor = "", [], 0
    for match in SLOT.finditer(template):
        text += template[cursor : match.start()]
        value, kind = _filler(rng, match.group(1))
        if kind is not None:
            entities.append({"start": len(text), "end": len(text) + len(value), "type": kind})
        text += value
        cursor = match.end()
    text += template[cursor:]
    return text[0].upper() + text[1:], entities


def _annotated(rng: random.Random, entity: dict[str, object]) -> dict[str, object] | None:
    """The entity as an annotator labeled it: now and then missed, or given another type."""
    if rng.random() >= NOISE:
        return entity
    if rng.random() < 0.5:
        return None
    return {**entity, "type": rng.choice([t for t in TYPES if t != entity["type"]])}


def news(desk: str, n: int, seed: int, prefix: str) -> list[dict[str, object]]:
    """``n`` sentences of ``desk`` ("world" or "markets-sports"), five to a document, reproducible."""
    rng = random.Random(seed)
    templates = WORLD if desk == "world" else MARKETS + SPORTS
    rows: list[dict[str, object]] = []
    for i in range(n):
        text, entities = sentence(rng, rng.choice(templates))
        annotated = [_annotated(rng, e) for e in entities]
        rows.append(
            {
                "id": f"{prefix}-{i:05d}",
                "text": text,
                "entities": [e for e in annotated if e is not None],
                "document": f"{prefix}-d{i // 5}",
            }
        )
    return rows


def write_entity_scenario(directory: Path, seed: int = 7) -> tuple[Path, Path]:
    """Write the built-in entity scenario: (training sentences before the change, the stream that drifts)."""
    directory.mkdir(parents=True, exist_ok=True)
    before = directory / "before.jsonl"
    stream = directory / "stream.jsonl"
    write_rows(before, news("world", 800, seed, "train"))
    late = _interleaved(news("markets-sports", 540, seed + 2, "late"), news("world", 360, seed + 3, "late-world"), seed)
    write_rows(stream, news("world", 300, seed + 1, "early") + late)
    return before, stream


def _interleaved(first: list[dict[str, object]], second: list[dict[str, object]], seed: int) -> list[dict[str, object]]:
    """Both feeds in one stream, whole documents at a time, in a seeded order."""
    documents: dict[object, list[dict[str, object]]] = {}
    for row in first + second:
        documents.setdefault(row["document"], []).append(row)
    order = list(documents)
    random.Random(seed).shuffle(order)
    return [row for name in order for row in documents[name]]
