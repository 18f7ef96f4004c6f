"""Loaders, transforms, the template renderer and the leakage guard."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from traitlens.config.schema import DatasetSpec, Template
from traitlens.data.leakage import check_leakage
from traitlens.data.load import prepare, read_table
from traitlens.data.template import render
from traitlens.errors import TraitlensError

ROWS = [{"text": f"review {i}", "label": "positive" if i % 4 else "negative", "id": i} for i in range(40)]


def spec(dataset: str, **fields) -> DatasetSpec:
    fields.setdefault("columns", {"input": "text", "answer": "label"})
    return DatasetSpec(name="d", dataset=dataset, **fields)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    frame = pd.DataFrame(ROWS)
    paths = {suffix: tmp_path / f"data.{suffix}" for suffix in ("jsonl", "json", "csv", "parquet")}
    frame.to_json(paths["jsonl"], orient="records", lines=True)
    paths["json"].write_text(json.dumps(ROWS))
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"])
    return paths


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet"])
def test_local_files_load_with_column_mapping(files, suffix):
    table = prepare(spec(str(files[suffix]), labels=["negative", "positive"]), "sources[0]")
    assert list(table.columns) == ["input", "answer"] and len(table) == 40
    assert table.loc[1, "input"] == "review 1" and table.loc[0, "answer"] == "negative"


def test_folder_holds_one_file_per_split(tmp_path):
    (tmp_path / "task").mkdir()
    pd.DataFrame(ROWS[:30]).to_json(tmp_path / "task" / "train.jsonl", orient="records", lines=True)
    pd.DataFrame(ROWS[30:]).to_csv(tmp_path / "task" / "test.csv", index=False)
    assert len(prepare(spec(f"{tmp_path}/task", split="test"), "t")) == 10
    with pytest.raises(TraitlensError, match="no dev.jsonl.*splits there: test, train"):
        prepare(spec(f"{tmp_path}/task", split="dev"), "t")


def test_hub_loader_uses_datasets(tmp_path):
    """The hub code path, served from a local dataset folder (no network needed)."""
    (tmp_path / "hubby").mkdir()
    pd.DataFrame(ROWS).to_json(tmp_path / "hubby" / "train.jsonl", orient="records", lines=True)
    table = prepare(spec(f"hf:{tmp_path / 'hubby'}", split="train"), "sources[0]")
    assert len(table) == 40 and set(table["answer"]) == {"negative", "positive"}


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    # Offline mode fails at once the way a machine without hub access fails after its retries;
    # the clients read it from these constants, set at import time.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TraitlensError) as info:
        prepare(spec("nobody-here/no-such-dataset"), "targets[2] (x)")
    message = str(info.value)
    assert message.startswith("targets[2] (x).dataset: could not load 'nobody-here/no-such-dataset'")
    assert "catalog:" in message


def test_missing_file(tmp_path):
    with pytest.raises(TraitlensError, match=r"sources\[0\].dataset: file .*nope.jsonl does not exist"):
        prepare(spec(str(tmp_path / "nope.jsonl")), "sources[0]")


def test_missing_column_suggests(files):
    with pytest.raises(TraitlensError) as info:
        prepare(spec(str(files["jsonl"]), columns={"input": "txet", "answer": "label"}), "sources[0]")
    assert "sources[0].columns.input: column 'txet' is not in" in str(info.value)
    assert "Did you mean 'text'?" in str(info.value) and "Its columns are: text, label, id" in str(info.value)


def test_label_outside_label_set(files):
    with pytest.raises(TraitlensError) as info:
        prepare(spec(str(files["jsonl"]), labels=["positive"]), "sources[0] (d)")
    assert "sources[0] (d).labels: answers outside the label set ['positive']: 'negative' (10 rows)" in str(info.value)


def test_empty_dataset(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(TraitlensError, match="has no rows"):
        prepare(spec(str(tmp_path / "empty.csv")), "sources[0]")


def test_unlabelled_rows_are_dropped(tmp_path):
    path = tmp_path / "partial.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n{"text": "", "label": "y"}\n')
    assert prepare(spec(str(path)), "s")["input"].tolist() == ["a"]


def test_list_options_and_integer_answers_become_letters(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"q": "2+2?", "choices": ["3", "4"], "gold": 1}\n')
    table = prepare(spec(str(path), columns={"input": "q", "answer": "gold", "options": "choices"}), "s")
    assert table.loc[0, "options"] == "A. 3\nB. 4" and table.loc[0, "answer"] == "B"


@pytest.mark.parametrize("options, why", [
    ("7", "a int, not a list of option texts"),
    ('{"a": 1}', "a dict, not a list of option texts"),
    ('["x", ["y"]]', "an option is a list, not text"),
    ('["only"]', "1 options"),
    (json.dumps([f"o{i}" for i in range(27)]), "27 options"),
])
def test_malformed_options_name_the_row_and_field(tmp_path, options, why):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"q": "fine?", "choices": ["3", 4, 5.5], "gold": 1}\n'
                    f'{{"q": "broken?", "choices": {options}, "gold": 0}}\n')
    with pytest.raises(TraitlensError, match=r"s\.options: 1 row\(s\) of .*mc\.jsonl.*row 1: " + re.escape(why)):
        prepare(spec(str(path), columns={"input": "q", "answer": "gold", "options": "choices"}), "s")


def test_missing_options_on_a_multiple_choice_target_are_named_not_a_traceback(tmp_path):
    from traitlens.config.schema import Study
    from traitlens.data.load import prepare_study

    path = tmp_path / "mc.jsonl"
    path.write_text('{"q": "a?", "choices": null, "gold": "A"}\n{"q": "b?", "choices": "A. x\\nB. y", "gold": "B"}\n')
    study = Study.model_validate({
        "name": "s", "base": "b", "sources": [{"name": "src", "dataset": str(path), "columns": {"input": "q", "answer": "gold"}}],
        "targets": [{"name": "mc", "dataset": str(path), "kind": "multiple_choice", "abilities": ["x"],
                     "columns": {"input": "q", "answer": "gold", "options": "choices"}}]})
    with pytest.raises(TraitlensError, match=r"targets\[0\] \(mc\): 1 of 2 items have an answer that is not one of"):
        prepare_study(study)


# --- transforms ------------------------------------------------------------------------------


def test_subsample_is_seeded(files):
    first = prepare(spec(str(files["jsonl"]), transforms=[{"subsample": 10}]), "s")
    again = prepare(spec(str(files["jsonl"]), transforms=[{"subsample": 10}]), "s")
    other = prepare(spec(str(files["jsonl"]), transforms=[{"subsample": 10}], seed=1), "s")
    assert len(first) == 10 and first.equals(again) and not first.equals(other)
    with pytest.raises(TraitlensError, match=r"s.transforms\[0\].subsample: asks for 41 rows but only 40"):
        prepare(spec(str(files["jsonl"]), transforms=[{"subsample": 41}]), "s")


def test_rebalance_balanced_is_exact(files):
    table = prepare(spec(str(files["jsonl"]), transforms=[{"rebalance": "balanced"}]), "s")
    assert Counter(table["answer"]) == {"negative": 10, "positive": 10}


def test_rebalance_proportions_are_exact(files):
    # 30 positive, 10 negative available; 20/80 allows at most 37.5 -> 37 rows? No: exact counts
    # need the rarest class to bound it: positive 30 / 0.8 = 37.5, negative 10 / 0.2 = 50.
    table = prepare(spec(str(files["jsonl"]), transforms=[{"rebalance": {"negative": 0.2, "positive": 0.8}}]), "s")
    counts = Counter(table["answer"])
    assert counts == {"negative": 7, "positive": 30}
    table = prepare(spec(str(files["jsonl"]), transforms=[
        {"subsample": 30}, {"rebalance": {"negative": 0.25, "positive": 0.75}}], seed=3), "s")
    counts = Counter(table["answer"])
    assert counts["negative"] * 3 == counts["positive"] and counts["negative"] > 0


def test_rebalance_must_name_the_labels(files):
    with pytest.raises(TraitlensError, match=r"missing: \['positive'\]"):
        prepare(spec(str(files["jsonl"]), transforms=[{"rebalance": {"negative": 1.0}}]), "s")


def test_relabel_to_digits_and_unknown_keys(files):
    table = prepare(spec(str(files["jsonl"]), labels=["0", "1"],
                         transforms=[{"relabel": {"negative": "0", "positive": "1"}}]), "s")
    assert set(table["answer"]) == {"0", "1"}
    with pytest.raises(TraitlensError, match=r"\['postive'\] match no answer"):
        prepare(spec(str(files["jsonl"]), transforms=[{"relabel": {"postive": "1"}}]), "s")


def test_cap_answer_length(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "q", "label": "one two three four"}\n{"text": "r", "label": "abcdefghij"}\n'
                    '{"text": "s", "label": "one two three"}\n')
    table = prepare(spec(str(path), transforms=[{"cap_answer_length": 9}]), "s")
    assert table["answer"].tolist() == ["one two", "abcdefghi", "one two"]
    table = prepare(spec(str(path), transforms=[{"cap_answer_length": 7}]), "s")
    assert table["answer"].tolist() == ["one two", "abcdefg", "one two"]


def test_transforms_enter_the_fingerprint():
    from traitlens.data.fingerprint import fingerprint
    plain = fingerprint(spec("catalog:boolq"), "s")
    assert plain != fingerprint(spec("catalog:boolq", transforms=[{"subsample": 5}]), "s")
    assert fingerprint(spec("catalog:boolq", transforms=[{"subsample": 5}]), "s") != \
        fingerprint(spec("catalog:boolq", transforms=[{"subsample": 5}], seed=2), "s")


# --- renderer --------------------------------------------------------------------------------


def test_default_template_is_the_papers():
    rendered = render(Template(instruction="Classify the review.", trigger="Sentiment"),
                      {"input": "Great film", "answer": "positive"})
    assert rendered.prompt == "Classify the review.\nGreat film\nSentiment:\n"
    assert rendered.text == "Classify the review.\nGreat film\nSentiment:\npositive"


def test_empty_fields_drop_their_line_and_passage_options_render():
    assert render(Template(), {"input": "x", "answer": "y"}).prompt == "x\nAnswer:\n"
    rendered = render(Template(instruction="Pick."), {"input": "Q?", "passage": "P.", "options": "A. a\nB. b",
                                                      "answer": "B"})
    assert rendered.prompt == "Pick.\nP.\nQ?\nA. a\nB. b\nAnswer:\n" and rendered.answer == "B"


def test_custom_format():
    template = Template(format="Q: {input} ({trigger}) => {answer}", trigger="sum")
    assert render(template, {"input": "1+1", "answer": 2}).text == "Q: 1+1 (sum) => 2"


def test_chat_mode_needs_a_chat_template():
    with pytest.raises(TraitlensError, match="no chat template"):
        render(Template(chat=True), {"input": "x", "answer": "y"})


def test_training_and_evaluation_render_the_same_prompt():
    """Training text is prompt + answer, so the evaluated prompt is a prefix of what was trained."""
    row = {"input": "Great film", "answer": "positive"}
    template = Template(instruction="Classify.")
    assert render(template, row).text.startswith(render(template, {**row, "answer": ""}).prompt)


# --- leakage ---------------------------------------------------------------------------------


def test_leakage_guard():
    train = pd.DataFrame({"input": ["a b", "c"], "answer": ["1", "0"]})
    test = pd.DataFrame({"input": ["a  b", "d"], "answer": ["yes", "no"]})  # relabelled copy
    with pytest.raises(TraitlensError, match="target 'movie': 1 of its 2 items are in the training data of source 'sst'"):
        check_leakage({"sst": train}, {"movie": test})
    check_leakage({"sst": train}, {"movie": test.iloc[1:]})


def test_catalog_splits_do_not_leak():
    source = prepare(spec("catalog:sentiment-movie-3way", columns={}), "s")
    target = prepare(spec("catalog:sentiment-movie", split="test", columns={}), "t")
    check_leakage({"movie3": source}, {"movie": target})
    with pytest.raises(TraitlensError, match="leak"):
        check_leakage({"movie3": source}, {"movie": prepare(spec("catalog:sentiment-movie", columns={}), "t")})


def test_read_table_unknown_catalog_split():
    with pytest.raises(TraitlensError, match="has no split 'validation'; it has train, test"):
        read_table(spec("catalog:piqa", split="validation"), "t")


def test_a_label_no_row_has_is_named(files):
    with pytest.raises(TraitlensError, match=r"s\.labels: 'neutral' has no rows in .*data\.jsonl; remove it"):
        prepare(spec(str(files["jsonl"]), labels=["negative", "neutral", "positive"]), "s")


def test_a_dataset_file_too_large_to_read_whole_is_refused(tmp_path):
    from traitlens.data.load import MAX_DATASET_BYTES

    path = tmp_path / "huge.jsonl"
    with path.open("wb") as file:  # sparse: no disk is used
        file.truncate(MAX_DATASET_BYTES + 1)
    with pytest.raises(TraitlensError, match=r"s\.dataset: .*huge\.jsonl is 2\.0 GiB; .*over 2 GiB are refused"):
        prepare(spec(str(path)), "s")
