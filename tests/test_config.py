from __future__ import annotations

from pathlib import Path

import pytest

from conftest import MINIMAL
from traitlens.config import load_study
from traitlens.errors import ConfigError, TraitlensError

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("**/*.y*ml"))


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_study(path)
    return info.value.problems


def test_examples_exist():
    assert any(path.name == "quickstart.yaml" for path in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path: Path):
    study = load_study(path)
    assert study.sources and study.targets


def test_defaults_and_shorthand(write_study):
    study = load_study(write_study())
    assert study.base.name == "smollm2-135m-instruct"  # `base: NAME` shorthand expanded
    assert study.lora.r == 64 and study.lora.alpha == 32  # the paper's settings by default
    assert study.training.learning_rate == 0.001 and study.training.seeds == [0]
    assert study.targets[0].split == "test" and study.sources[0].split == "train"
    assert study.store == (write_study().parent / ".traitlens").resolve()


def test_misspelt_key_suggests_the_right_one(write_study):
    [problem] = problems_of(write_study(MINIMAL.replace("learning_rate", "learning_rat")))
    assert "training.learning_rat" in problem
    assert "Did you mean 'learning_rate'?" in problem
    assert problem.startswith(f"{write_study().parent}/study.yaml:24:")  # the key's own line


def test_all_problems_reported_together_in_file_order(write_study):
    text = (MINIMAL.replace("learning_rate", "learning_rat")
            .replace("kind: generative", "kind: generatve")
            .replace("max_steps: 4", "max_steps: -4")
            .replace("  - name: boolq\n    dataset: catalog:boolq\n", "  - name: boolq\n"))
    problems = problems_of(write_study(text))
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    assert "sources[1].dataset: required but missing" in joined
    assert "targets[1].kind: got 'generatve'" in joined and "Did you mean 'generative'?" in joined
    assert "training.max_steps: must be greater than 0; got -4" in joined
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines)


def test_misspelt_value_and_nested_key(write_study):
    text = MINIMAL + "lora: {r: 8, alhpa: 16}\nanalysis: {method: pcaa}\n"
    joined = "\n".join(problems_of(write_study(text)))
    assert "lora.alhpa: unknown key. Did you mean 'alpha'?" in joined
    assert "analysis.method: got 'pcaa'" in joined and "Did you mean 'pca'?" in joined


def test_transform_needs_exactly_one_key(write_study):
    text = MINIMAL.replace("    labels: [negative, positive]\n  - name: boolq",
                           "    labels: [negative, positive]\n"
                           "    transforms: [{subsample: 10, cap_answer_length: 5}, {subsampel: 3}]\n"
                           "  - name: boolq", 1)
    joined = "\n".join(problems_of(write_study(text)))
    assert "sources[0].transforms[0]: write exactly one transform per entry" in joined
    assert "sources[0].transforms[1].subsampel: unknown key. Did you mean 'subsample'?" in joined


def test_rebalance_proportions_must_sum_to_one(write_study):
    text = MINIMAL.replace("    labels: [negative, positive]\n  - name: boolq",
                           "    labels: [negative, positive]\n"
                           "    transforms: [{rebalance: {negative: 0.5, positive: 0.6}}]\n"
                           "  - name: boolq", 1)
    assert "must sum to 1" in "\n".join(problems_of(write_study(text)))


def test_template_format_checked(write_study):
    text = MINIMAL.replace("    kind: generative", "    kind: generative\n"
                           "    template: {format: \"{input} {answr}\"}")
    [problem] = problems_of(write_study(text))
    assert "targets[1].template.format" in problem and "answr" in problem


def test_classification_target_needs_labels_and_names_are_unique(write_study):
    text = MINIMAL.replace("    kind: classification\n    labels: [negative, positive]\n",
                           "    kind: classification\n").replace("name: asdiv", "name: movie")
    joined = "\n".join(problems_of(write_study(text)))
    assert "needs `labels:`" in joined
    assert "name(s) 'movie' used more than once" in joined


def test_labels_that_differ_only_by_spaces_are_refused(write_study):
    text = MINIMAL.replace("labels: [negative, positive]", "labels: [negative, 'negative ', positive]")
    problems = problems_of(write_study(text))  # every spec that lists them
    assert problems and all(".labels" in p and "'negative '" in p and "without surrounding spaces" in p for p in problems)


def test_duplicate_yaml_key_is_an_error(write_study):
    text = MINIMAL.replace("  max_steps: 4", "  max_steps: 4\n  max_steps: 5")
    [problem] = problems_of(write_study(text))
    assert "training.max_steps: key written twice" in problem


def test_yaml_syntax_error_names_the_line(write_study):
    with pytest.raises(TraitlensError, match=r"study.yaml:\d+: not valid YAML"):
        load_study(write_study(MINIMAL + "training: [unclosed\n"))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TraitlensError, match="no such file"):
        load_study(tmp_path / "nope.yaml")


def test_sources_can_be_included_from_files(write_study, tmp_path):
    sub = tmp_path / "specs"
    sub.mkdir()
    (sub / "sources.yaml").write_text(
        "- name: local\n  dataset: data/local.jsonl\n- name: tweets\n  dataset: catalog:sentiment-tweets\n  labls: [a]\n")
    text = MINIMAL.replace("sources:\n", "sources:\n  - specs/sources.yaml\n")
    problems = problems_of(write_study(text))
    # The error inside the included file points at that file and line.
    assert problems == [f"{sub / 'sources.yaml'}:5: sources[1].labls: unknown key. Did you mean "
                        "'labels'? Allowed keys here: name, dataset, subset, revision, split, "
                        "columns, labels, template, transforms, seed, family."]
    (sub / "sources.yaml").write_text("- name: local\n  dataset: data/local.jsonl\n")
    study = load_study(write_study(text))
    assert [s.name for s in study.sources] == ["local", "movie", "boolq"]
    # A relative path means relative to the file that wrote it.
    assert study.sources[0].dataset == str(sub / "data" / "local.jsonl")


def test_missing_include_is_reported(write_study):
    problems = problems_of(write_study(MINIMAL.replace("targets:\n", "targets:\n  - gone.yaml\n")))
    assert len(problems) == 1 and "included file 'gone.yaml' not found" in problems[0]


def test_execution_address_checked(write_study):
    joined = "\n".join(problems_of(write_study(MINIMAL + "execution: {executor: ray, address: 'localhost'}\n")))
    assert "address must be `auto` or `ray://host:port`" in joined
    study = load_study(write_study(MINIMAL + "execution: {executor: ray, address: 'ray://10.0.0.1:10001'}\n"))
    assert study.execution.address == "ray://10.0.0.1:10001"


@pytest.mark.parametrize("packing", [True, False])
def test_packing_can_be_set_either_way(write_study, packing):
    study = load_study(write_study(MINIMAL + f"  packing: {str(packing).lower()}\n"))
    assert study.training.packing is packing


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("null", None), ("2048", 2048)])
def test_pass_tokens_takes_auto_none_or_a_count(write_study, value, expected):
    assert load_study(write_study(MINIMAL + f"  pass_tokens: {value}\n")).training.pass_tokens == expected


@pytest.mark.parametrize("value", ["0", "lots"])
def test_pass_tokens_refuses_anything_else_and_names_itself(write_study, value):
    joined = "\n".join(problems_of(write_study(MINIMAL + f"  pass_tokens: {value}\n")))
    assert "training.pass_tokens: got" in joined and "expected 'auto'; or " in joined  # every form it takes


def test_a_value_a_union_refuses_gets_every_form_it_takes(write_study):
    text = MINIMAL.replace("training:\n", "analysis:\n  n_traits: many\ntraining:\n")
    joined = "\n".join(problems_of(write_study(text)))
    assert "analysis.n_traits: got 'many'; expected 'auto'; or a valid integer" in joined


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize("text, expected", [
    (LAUGHS, "values once its YAML aliases are expanded"),  # a billion laughs: 9^9 values
    ("name: &x [*x]\n", "or an alias used inside itself"),
    ("name: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("name: " + "{a: " * 100 + "1" + "}" * 100 + "\n", "nested more than 64 levels deep"),
])
def test_crafted_yaml_is_refused_quickly_with_a_message(tmp_path, text, expected):
    import time

    path = tmp_path / "study.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(TraitlensError, match=expected):
        load_study(path)
    assert time.perf_counter() - started < 30  # not a timing test: a hang would take hours


def test_a_huge_study_file_is_refused(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(MINIMAL + "description: '" + "x" * (1 << 20) + "'\n")
    with pytest.raises(TraitlensError, match="a study or spec file is at most 1,048,576"):
        load_study(path)


@pytest.mark.parametrize("edit, expected", [
    (("learning_rate: 0.001", "learning_rate: .inf"), "training.learning_rate: must be a finite number"),
    (("labels: [negative, positive]", "labels: [negative, negative]"), "'negative' listed more than once"),
    (("labels: [negative, positive]", "labels: []"), "List should have at least 1 item"),
    (("name: tiny", "store: ''\nname: tiny"), "store is empty"),
    (("max_steps: 4", "max_steps: 100000000000"), "max_steps: must be less than or equal to"),
])
def test_values_that_would_fail_later_are_refused_up_front(write_study, edit, expected):
    text = MINIMAL.replace(*edit)
    assert text != MINIMAL, edit
    with pytest.raises(ConfigError, match=expected):
        load_study(write_study(text))


def test_a_store_that_is_a_file_is_refused(write_study, tmp_path):
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        load_study(write_study(MINIMAL + f"store: {tmp_path / 'not-a-dir'}\n"))
    with pytest.raises(ConfigError, match="not-a-dir is a file, so .*not-a-dir/sub/store cannot be created under it"):
        load_study(write_study(MINIMAL + f"store: {tmp_path / 'not-a-dir' / 'sub' / 'store'}\n"))


def test_a_bad_value_is_shown_cut_short(write_study, tmp_path):
    (tmp_path / "inc.yaml").write_text("x" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_study(write_study(MINIMAL.replace("sources:\n", "sources:\n  - inc.yaml\n", 1)))
    assert "... (5,002 characters)" in str(info.value) and len(str(info.value)) < 1000


def test_numbers_out_of_range_or_of_the_wrong_type_name_their_field(write_study):
    """Seeds past numpy's 32-bit range used to pass `validate` and fail in numpy at `run`; a
    bool passed as a batch size; counts had no ceiling."""
    text = (MINIMAL + "analysis: {seed: 4294967296, bootstrap_samples: 1000000000}\n"
            + "lora: {r: true}\n")
    problems = " ".join(problems_of(write_study(text)))
    assert "analysis.seed" in problems and "4294967296" in problems
    assert "analysis.bootstrap_samples" in problems and "lora.r" in problems
    assert load_study(write_study(MINIMAL + "analysis: {seed: 4294967295}\n", name="edge.yaml")).analysis.seed == 2**32 - 1


def test_a_yaml_key_that_is_a_list_is_a_clear_error(write_study):
    path = write_study(MINIMAL + "? [a, b]\n: 1\n")
    with pytest.raises(TraitlensError, match="a key is a list or mapping"):
        load_study(path)


def test_a_study_path_that_is_a_pipe_or_a_loop_is_refused_at_once(tmp_path):
    """`validate` on a FIFO used to wait forever; a symlink loop gave a traceback."""
    import os

    fifo = tmp_path / "study.yaml"
    os.mkfifo(fifo)
    with pytest.raises(TraitlensError, match="not a regular file"):
        load_study(fifo)
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(TraitlensError, match="cannot open it"):
        load_study(loop)
    with pytest.raises(TraitlensError, match="cannot open it"):
        load_study(tmp_path / ("x" * 300 + ".yaml"))


def test_recommend_on_a_missing_study_names_the_file(tmp_path):
    """It complained about --target / --source before saying the study file is not there."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "traitlens", "recommend", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "nope.yaml: no such file" in run.stderr + run.stdout


@pytest.mark.parametrize("store, said", [
    ("~nosuchuser-traitlens/store", "names no home directory on this machine"),
    ("/proc/traitlens-store", "virtual file system"),
    ("/tmp/" + "x" * 300 + "/store", "longer than the file system allows"),
])
def test_unusable_store_paths_are_named_not_tracebacks(write_study, store, said):
    text = MINIMAL + f"store: {store}\n"  # MINIMAL names no store
    with pytest.raises(TraitlensError, match=said):
        load_study(write_study(text))


def test_an_include_that_is_a_pipe_or_a_loop_is_named(write_study, tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    with pytest.raises(TraitlensError, match=r"included file 'pipe\.yaml' is not a regular file"):
        load_study(write_study(MINIMAL.replace("sources:\n", "sources:\n  - pipe.yaml\n", 1), name="a.yaml"))
    with pytest.raises(TraitlensError, match=r"path 'loop\.yaml' cannot be resolved"):
        load_study(write_study(MINIMAL.replace("sources:\n", "sources:\n  - loop.yaml\n", 1), name="b.yaml"))
