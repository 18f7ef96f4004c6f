"""Properties over generated inputs (Hypothesis): every study file, dataset row and command line
ends in success or a named error (exit 2), never a traceback, and never hangs (each command runs
under test_fuzz's alarm: a generous bound that catches a hang without timing anything else).
test_fuzz.py keeps its seeded cases; these search the space and shrink a failure to its core.
More examples: `HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_properties.py`."""

from __future__ import annotations

import json
import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MINIMAL
from test_fuzz import invoke
from traitlens.config.schema import Study
from traitlens.data.load import prepare_study
from traitlens.errors import TraitlensError

settings.register_profile("suite", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=8)
LEAF = JSON | st.floats() | st.sampled_from(["", " ", "../../x", "~nobody-here/x", "catalog:nope", "/proc/x", "\u202e"])


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, path + (index,))


@st.composite
def studies(draw) -> str:
    """MINIMAL with one to three values replaced by anything, keys dropped or unknown ones added."""
    data = yaml.safe_load(MINIMAL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(data))[1:]))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["value", "drop", "extra"]))
        if action == "value":
            parent[path[-1]] = draw(LEAF)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(LEAF)
    return yaml.safe_dump(data, allow_unicode=True)


@given(text=studies())
def test_any_study_file_validates_or_names_its_problem(tmp_path, monkeypatch, capsys, text):
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    code, err = invoke(monkeypatch, capsys, "validate", "--schema-only", str(path))
    assert code in (0, 2) and "Traceback" not in err, err[-2000:]
    assert code == 0 or "study.yaml" in err or "error:" in err


ROW = st.fixed_dictionaries({"q": JSON, "gold": JSON, "choices": JSON})


@given(rows=st.lists(ROW, min_size=1, max_size=6), kind=st.sampled_from(["classification", "multiple_choice"]))
def test_any_dataset_rows_load_or_name_the_field(tmp_path, rows, kind):
    source, target = tmp_path / "source.jsonl", tmp_path / "target.jsonl"
    source.write_text("".join(json.dumps({"q": f"s{i}", "gold": "a"}) + "\n" for i in range(4)))
    target.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {"name": "t", "dataset": str(target), "kind": kind, "abilities": ["x"],
            "columns": {"input": "q", "answer": "gold", **({"options": "choices"} if kind == "multiple_choice" else {})}}
    if kind == "classification":
        spec["labels"] = ["a", "b"]
    study = Study.model_validate({"name": "s", "base": "b", "targets": [spec], "sources": [
        {"name": "s", "dataset": str(source), "columns": {"input": "q", "answer": "gold"}}]})
    try:
        prepare_study(study)
    except TraitlensError as exc:
        assert "targets[0] (t)" in str(exc) or str(target) in str(exc), str(exc)


COMMANDS = [["validate"], ["validate", "--schema-only"], ["plan"], ["status"], ["doctor"], ["doctor", "--repair"],
            ["traits"], ["reliability"], ["report"], ["compare-cells"], ["analyze"], ["data", "show"], ["data", "list"]]
ARGUMENTS = st.sampled_from(["STUDY", "nope.yaml", "", "-1", "1e309", "--goal", "--target", "--metric", "--top", "-o",
                             "--from-export", "--split", "--unpriced", "movie", "base", "accuracy", "0.5", "/dev/null"])


@given(command=st.sampled_from(COMMANDS), arguments=st.lists(ARGUMENTS | st.text(max_size=8), max_size=5))
def test_any_command_line_succeeds_or_exits_2(tmp_path, monkeypatch, capsys, command, arguments):
    """Read-only commands only: none of these trains, scores or loads a model."""
    study = tmp_path / "study.yaml"
    study.write_text(MINIMAL)
    argv = [*command, *(str(study) if a == "STUDY" else a for a in arguments)]
    code, err = invoke(monkeypatch, capsys, *[a for a in argv if "\x00" not in a])
    assert code in (0, 2) and "Traceback" not in err, (argv, err[-2000:])
