"""Running whole grids: resume after a kill, incremental sources, failure isolation, Ray."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

from rich.console import Console

from conftest import MORE_SOURCES, TINY_TRAIN
from traitlens.config import load_study
from traitlens.data.load import prepare_study
from traitlens.execution.local import run_plan
from traitlens.execution.plan import plan_study
from traitlens.models.fake import FakeScorer
from traitlens.store import Store

QUIET = Console(quiet=True)


def grid(write_study, tiny_model, extra_sources: str = "", name: str = "study.yaml", tail: str = ""):
    sections = MORE_SOURCES.replace("targets:\n", extra_sources + "targets:\n")
    text = TINY_TRAIN.format(base=tiny_model).replace("targets:\n", sections, 1) + tail
    study = load_study(write_study(text, name=name))
    sources, targets = prepare_study(study)
    return study, plan_study(study), Store(study.store), sources, targets


def attempts(store: Store, plan) -> dict[str, int]:
    records = store.jobs(job.key for job in plan.jobs)
    return {job.label: records[job.key].attempts for job in plan.jobs if job.key in records}


def test_incremental_source_runs_exactly_its_jobs(write_study, tiny_model):
    study, plan, store, sources, targets = grid(write_study, tiny_model)
    first = run_plan(plan, store, sources, targets, QUIET, make_scorer=lambda s: FakeScorer())
    assert first.ran == len(plan.jobs) == 2 + 3 * 2 and not first.failed
    extra = "  - name: nyt\n    dataset: catalog:sentiment-nyt\n    transforms: [{subsample: 16}]\n"
    study, bigger, store, sources, targets = grid(write_study, tiny_model, extra_sources=extra)
    second = run_plan(bigger, store, sources, targets, QUIET, make_scorer=lambda s: FakeScorer())
    assert second.done == len(plan.jobs) and second.ran == 1 + 2  # one training, one cell per target
    assert set(attempts(store, bigger).values()) == {1}  # nothing done twice


def test_a_failing_job_does_not_stop_the_others_and_is_retried(write_study, tiny_model):
    study, plan, store, sources, targets = grid(write_study, tiny_model)

    class FailsOnAmazon(FakeScorer):
        def loglikelihood(self, requests):
            if any("Amazon" in r.context or "amazon" in r.context for r in requests):
                raise RuntimeError("boom")
            return super().loglikelihood(requests)

    tables = {**targets, "amazon": targets["amazon"].assign(input=lambda t: "amazon: " + t["input"])}
    log = Console(file=io.StringIO(), width=200)  # not a terminal, as under nohup or in CI
    summary = run_plan(plan, store, sources, tables, log, make_scorer=lambda s: FailsOnAmazon())
    assert len(summary.failed) == 3 and all("amazon" in label for label, _ in summary.failed)
    lines = log.file.getvalue().splitlines()  # one line per finished job, as it finishes
    assert len(lines) == len(plan.jobs) and lines[0].startswith(f"[1/{len(plan.jobs)}] train ")
    assert sum("failed: RuntimeError: boom" in line for line in lines) == 3
    assert summary.ran == len(plan.jobs) - 3
    states = plan.states(store)
    assert [states[j.key] for j in plan.eval_jobs if j.target == "amazon"] == ["failed"] * 3
    again = run_plan(plan, store, sources, tables, QUIET, make_scorer=lambda s: FakeScorer())
    assert again.ran == 3 and not again.failed and set(plan.states(store).values()) == {"done"}


def test_killed_run_then_rerun_completes_the_rest(write_study, tiny_model, tmp_path):
    text = (TINY_TRAIN.format(base=tiny_model).replace("targets:\n", MORE_SOURCES, 1)
            .replace("max_steps: 6", "max_steps: 40").replace("checkpoint_every: 2", "checkpoint_every: 5"))
    path = write_study(text)
    # Killed (SIGKILL, no cleanup) as the second adapter is moved into place: triggered by the
    # run reaching that point (traitlens.faults), not by a timer, so a busy machine changes nothing.
    run = subprocess.run([sys.executable, "-m", "traitlens", "run", str(path)], capture_output=True,
                         env={**os.environ, "TRAITLENS_CRASH": "adapter_rename:2"})
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    study = load_study(path)
    plan, store = plan_study(study), Store(study.store)
    before = {job.label: state for job, state in zip(plan.jobs, plan.states(store).values())}
    assert list(before.values()).count("done") == 1 and "running" in before.values()
    status = subprocess.run([sys.executable, "-m", "traitlens", "status", str(path)], capture_output=True, text=True)
    assert status.returncode == 0 and "the store is in use" not in status.stdout
    assert "interrupted; the next run redoes it" in status.stdout
    finished = subprocess.run([sys.executable, "-m", "traitlens", "run", str(path)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert set(plan.states(store).values()) == {"done"}
    counts = attempts(store, plan)
    assert all(counts[label] == 1 for label, state in before.items() if state == "done")  # not redone


def test_ray_executor_matches_the_local_one(write_study, tiny_model):
    """A real local Ray cluster (127.0.0.1) runs the grid; its cells equal the local executor's.
    Both sides use 2 CPU threads, so their float arithmetic is the same."""
    from traitlens.execution.distributed import run_plan_ray

    study, plan, store, sources, targets = grid(write_study, tiny_model, name="local.yaml",
                                                tail="store: local-store\n")
    assert not run_plan(plan, store, sources, targets, QUIET).failed
    ray_study, ray_plan, ray_store, _, _ = grid(
        write_study, tiny_model, name="ray.yaml",
        tail="execution: {executor: ray, cpus_per_job: 2}\nstore: ray-store\n")
    assert [j.key for j in ray_plan.jobs] == [j.key for j in plan.jobs]  # the executor is not in keys
    summary = run_plan_ray(ray_plan, ray_store, sources, targets, QUIET)
    assert not summary.failed and summary.ran == len(plan.jobs)
    records = ray_store.jobs(j.key for j in ray_plan.jobs)
    assert {r.state for r in records.values()} == {"done"} and all(r.attempts == 1 for r in records.values())
    assert all(r.label for r in records.values())
    for job in plan.eval_jobs:
        assert ray_store.cell(job.key)["metrics"] == store.cell(job.key)["metrics"]
        assert ray_store.items(job.key) == store.items(job.key)
    assert run_plan_ray(ray_plan, ray_store, sources, targets, QUIET).ran == 0  # nothing left to do
