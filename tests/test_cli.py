"""The `traitlens` command as a user runs it: a real subprocess, exit codes, no tracebacks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MINIMAL, MORE_SOURCES, TINY_TRAIN

REPO = Path(__file__).parent.parent


def traitlens(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "traitlens", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_version():
    result = traitlens("--version")
    assert result.returncode == 0 and result.stdout.startswith("traitlens, version ")


@pytest.mark.parametrize("command", [[], ["validate"], ["plan"], ["run"], ["train"], ["status"],
                                     ["traits"], ["reliability"], ["explain"], ["recommend"], ["report"], ["data"],
                                     ["data", "list"],
                                     ["data", "show"]])
def test_every_command_has_help(command):
    result = traitlens(*command, "--help")
    assert result.returncode == 0
    assert "Usage: " in result.stdout and len(result.stdout.splitlines()) > 5


def test_validate_quickstart():
    result = traitlens("validate", "examples/quickstart.yaml")
    assert result.returncode == 0, result.stderr
    assert "ok: study quickstart" in result.stdout


def test_misspelt_key_exits_2_with_suggestion_and_no_traceback(tmp_path):
    text = (REPO / "examples" / "quickstart.yaml").read_text().replace("learning_rate", "learning_rat")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = traitlens("validate", str(bad))
    assert result.returncode == 2
    assert "training.learning_rat: unknown key. Did you mean 'learning_rate'?" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_study_file_exits_2(tmp_path):
    result = traitlens("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_lists_jobs_without_creating_a_store(tmp_path):
    study = tmp_path / "quickstart.yaml"
    study.write_text((REPO / "examples" / "quickstart.yaml").read_text()
                     .replace("store: ../.traitlens/quickstart", "store: fresh-store"))
    result = traitlens("plan", str(study))
    assert result.returncode == 0, result.stderr
    assert "train movie (seed 0)" in result.stdout and "eval base on asdiv" in result.stdout
    assert "34 jobs (4 training, 30 evaluation): 0 done, 34 to run" in result.stdout
    assert not (tmp_path / "fresh-store").exists()


def test_run_trains_evaluates_then_reruns_doing_nothing(write_study, tiny_model):
    """A whole run through the CLI on a tiny real model, then an idempotent rerun."""
    study = write_study(TINY_TRAIN.format(base=tiny_model))
    result = traitlens("run", str(study))
    assert result.returncode == 0, result.stderr
    assert "0 jobs were already done, 3 ran now, 0 failed." in result.stdout
    assert re.search(r"base\s+│\s+\d\.\d{3}\s+│", result.stdout), result.stdout
    assert re.search(r"movie\s+│\s+\d\.\d{3}\s+│", result.stdout), result.stdout
    from traitlens.config import load_study
    from traitlens.store import Store

    store = Store(load_study(study).store)
    assert store.study_config("tiny-train")["training"]["learning_rate"] == 0.01
    again = traitlens("run", str(study))
    assert "3 jobs were already done, 0 ran now" in again.stdout
    planned = traitlens("plan", str(study))
    assert "3 jobs (1 training, 2 evaluation): 3 done, 0 to run" in planned.stdout


def test_train_command_trains_only_what_is_asked(write_study, tiny_model):
    study = write_study(TINY_TRAIN.format(base=tiny_model).replace("  checkpoint_every: 2\n",
                                                                   "  checkpoint_every: 2\n  seeds: [0, 1]\n"))
    result = traitlens("train", str(study), "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "0 jobs were already done, 1 ran now, 0 failed." in result.stdout
    assert "5 jobs (2 training, 3 evaluation): 1 done, 4 to run" in traitlens("plan", str(study)).stdout
    wrong = traitlens("train", str(study), "--source", "moive")
    assert wrong.returncode == 2 and "sources: 'moive' is not a source of tiny-train (movie)" in wrong.stderr


def test_run_refuses_a_locked_store(tmp_path, write_study):
    study = write_study(MINIMAL + "store: shared-store\n")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys; from pathlib import Path; from traitlens.store import Store\n"
                               f"with Store(Path({str(tmp_path / 'shared-store')!r})).locked('traitlens run a.yaml'):\n"
                               "    print('locked', flush=True); sys.stdin.readline()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = traitlens("run", str(study))
        assert result.returncode == 2
        assert f"locked by process {holder.pid}" in result.stderr and "traitlens run a.yaml" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.communicate("\n", timeout=30)


def test_data_list_and_show_print_real_rows():
    listed = traitlens("data", "list")
    assert listed.returncode == 0 and "sentiment-movie" in listed.stdout and "asdiv" in listed.stdout
    shown = traitlens("data", "show", "catalog:sentiment-movie", "-n", "1")
    assert shown.returncode == 0, shown.stderr
    assert "catalog:sentiment-movie split train: 8" in shown.stdout and "labels: " in shown.stdout
    assert "The Rock is destined" in shown.stdout  # the corpus's first real snippet


def test_validate_reports_data_problems(tmp_path, write_study):
    study = write_study(MINIMAL.replace("labels: [negative, positive]\n  - name: boolq",
                                        "labels: [negative]\n  - name: boolq", 1))
    result = traitlens("validate", str(study))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sources[0] (movie).labels: answers outside the label set ['negative']" in result.stderr
    assert traitlens("validate", "--schema-only", str(study)).returncode == 0


def test_traits_command_reads_the_store(write_study, tiny_model):
    """Cells come from the fake scorer (in-process); the command itself only reads the store."""
    from rich.console import Console

    from traitlens.config import load_study
    from traitlens.data.load import prepare_study
    from traitlens.execution.local import run_plan
    from traitlens.execution.plan import plan_study
    from traitlens.models.fake import FakeScorer
    from traitlens.store import Store

    sections = MORE_SOURCES.replace("targets:\n", """\
  - name: math
    dataset: catalog:arithmetic
    transforms: [{subsample: 16}]
targets:
""") + """\
  - name: nyt
    dataset: catalog:sentiment-nyt
    kind: classification
    labels: [negative, positive]
    abilities: [sentiment]
  - name: boolq
    dataset: catalog:boolq
    split: dev
    kind: classification
    labels: ["no", "yes"]
    abilities: [reading]
"""
    text = (TINY_TRAIN.format(base=tiny_model).replace("targets:\n", sections)
            .replace("  - name: movie\n    dataset: catalog:sentiment-movie\n    kind: classification\n"
                     "    labels: [negative, positive]\n    abilities: [sentiment]\n", "")
            .replace("evaluation: {limit: 8, dtype: float32}", "evaluation: {limit: 40, dtype: float32}\nanalysis: {bootstrap_samples: 50}"))
    path = write_study(text)
    assert traitlens("traits", str(path)).returncode == 2  # nothing run yet: a clear error
    study = load_study(path)
    sources, targets = prepare_study(study)
    summary = run_plan(plan_study(study), Store(study.store), sources, targets, Console(quiet=True),
                       make_scorer=lambda s: FakeScorer(bias={None: "negative"}))
    assert not summary.failed and summary.ran == 3 + 4 * 3, summary
    result = traitlens("traits", str(path))
    assert result.returncode == 0, result.stderr
    assert "trait 1:" in result.stdout and "loadings (targets x traits)" in result.stdout
    assert "[1/1] analysis: traits: done in" in result.stdout  # in a log, the analysis reports too
    assert "median congruence" in " ".join(result.stdout.split())  # rich wraps long lines
    stored = Store(study.store).analysis("tiny-train", "traits")
    assert stored is not None and stored[1]["traits"][0]["loadings"]
    assert "one seed per source" in " ".join(result.stdout.split()).lower()  # training noise not measured
    for flags in ((), ("--unpriced",)):  # priced: the study's counted compute, read from datasets and tokenizer
        reliable = traitlens("reliability", str(path), *flags)
        assert reliable.returncode == 0, reliable.stderr
        out = " ".join(reliable.stdout.split())
        assert "One seed per source" in out and "variance components and reliability per target" in out
        assert "no projection to other designs" in out  # one seed: nothing to project seeds from
    explained = traitlens("explain", str(path))
    assert explained.returncode == 0, explained.stderr
    assert "verdict: too small to tell: 3 source families" in explained.stdout
    assert "feature groups: held-out R2" in explained.stdout
    assert "strongest correlations" in explained.stdout and "source profiles" in explained.stdout
    saved = Store(study.store).analysis("tiny-train", "explain")[1]
    assert saved["correlations"] and saved["recommendations"]
    features = Store(study.store).analysis("tiny-train", "features")[1]  # stored apart: no model to explain again
    assert set(features["source_profiles"]) == {"movie", "tweets", "math"}
    spec = path.parent / "new-target.yaml"
    spec.write_text("name: movie-new\ndataset: catalog:sentiment-movie\nkind: classification\n"
                    "labels: [negative, positive]\nabilities: [sentiment]\n")
    ranked = traitlens("recommend", str(path), "--target", str(spec))
    assert ranked.returncode == 0, ranked.stderr
    assert "sources ranked by predicted transfer to movie-new" in ranked.stdout
    assert "mean held-out Spearman" in ranked.stdout
    both = traitlens("recommend", str(path))
    assert both.returncode == 2 and "exactly one of --target" in both.stderr
    summary = " ".join(traitlens("run", str(path)).stdout.split())  # all done: the end-of-run summary only
    assert "metric: calibrated_margin, the gold answer's log-probability lead" in summary
    assert "over items" in summary and "over sources" in summary and "why: too small to tell" in summary
    assert "recommendations: " in summary and "report: " in summary


def test_status_shows_counts_and_errors(write_study):
    from traitlens.config import load_study
    from traitlens.execution.plan import plan_study
    from traitlens.store import Store

    study_path = write_study()
    assert "│ train │    0 │       0 │      0 │   2 │" in traitlens("status", str(study_path)).stdout
    study = load_study(study_path)
    job = plan_study(study).train_jobs[0]
    store = Store(study.store)
    store.start_job(job.key, "train", job.label, job.spec, worker="test")
    store.fail_job(job.key, "RuntimeError: disk full")
    result = traitlens("status", str(study_path))
    assert result.returncode == 0
    assert "│ train │    0 │       0 │      1 │   1 │" in result.stdout
    assert "failed train movie (seed 0) (attempt 1): RuntimeError: disk full" in result.stdout
