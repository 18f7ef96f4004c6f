"""What a damaged, hostile or interrupted store can do: nothing worse than cost a rerun.

Crash points (`traitlens.faults`, TRAITLENS_CRASH) kill a real run with SIGKILL at each phase,
triggered by the run reaching it, not by a timer; checksums catch adapter files that are not
what was written; `traitlens doctor` finds and repairs what is safe to repair."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest

from conftest import MORE_SOURCES, TINY_TRAIN
from traitlens.config import load_study
from traitlens.execution.plan import plan_study
from traitlens.faults import POINTS
from traitlens.store import Store
from traitlens.store.db import DamagedArtifactError

THREE_SOURCES = MORE_SOURCES.replace("targets:\n", """\
  - name: math
    dataset: catalog:arithmetic
    transforms: [{subsample: 16}]
targets:
""")


def traitlens(*args, env=None):
    return subprocess.run([sys.executable, "-m", "traitlens", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def cells(store: Store, plan) -> dict[str, list]:
    return {job.label: [(i["prediction"], i["score"], i["choice_logprobs"]) for i in store.items(job.key)]
            for job in plan.eval_jobs}


def adapter_weights(store: Store, plan) -> dict[str, bytes]:
    return {job.label: (store.adapter_path(job.key) / "adapter_model.safetensors").read_bytes()
            for job in plan.train_jobs}


def test_a_run_killed_at_every_phase_reruns_to_the_same_results(write_study, tiny_model):
    text = (TINY_TRAIN.format(base=tiny_model).replace("targets:\n", THREE_SOURCES, 1)
            + "analysis: {bootstrap_samples: 20}\n")
    reference = write_study(text + "store: reference-store\n", "reference.yaml")
    assert traitlens("run", str(reference)).returncode == 0
    path = write_study(text + "store: crashed-store\n", "study.yaml")
    points = ("train_step:3", "checkpoint_write:2", "adapter_rename:1", "cell_write:2", "analysis", "report")
    assert {p.partition(":")[0] for p in points} == set(POINTS)  # every crash point the code has
    for point in points:
        killed = traitlens("run", str(path), env={"TRAITLENS_CRASH": point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stdout[-2000:], killed.stderr[-2000:])
    finished = traitlens("run", str(path))
    assert finished.returncode == 0, finished.stderr
    assert "report: " in finished.stdout
    ours, theirs = load_study(path), load_study(reference)
    plan, store = plan_study(ours), Store(ours.store)
    reference_plan, reference_store = plan_study(theirs), Store(theirs.store)
    assert cells(store, plan) == cells(reference_store, reference_plan)
    assert adapter_weights(store, plan) == adapter_weights(reference_store, reference_plan)
    doctor = traitlens("doctor", str(path))
    assert doctor.returncode == 0 and "sound" in doctor.stdout, doctor.stdout


@pytest.fixture
def stored_adapter(tmp_path, write_study):
    """A store holding one adapter (a folder of two files) as training would leave it."""
    from conftest import MINIMAL

    study = load_study(write_study(MINIMAL + f"store: {tmp_path / 'store'}\n"))
    plan = plan_study(study)
    store = Store(study.store)
    job = plan.train_jobs[0]
    store.start_job(job.key, "train", job.label, job.spec, worker="test")
    folder = store.scratch_dir(job.key)
    (folder / "adapter_model.safetensors").write_bytes(b"weights" * 100)
    (folder / "traitlens.json").write_text(json.dumps({"base": job.spec["base"]}))
    store.put_adapter(job.key, job.source, 0, folder, {})
    return study, store, job


@pytest.mark.parametrize("damage", ["replaced", "truncated metadata", "deleted file", "deleted folder"])
def test_an_adapter_that_is_not_what_was_written_is_requeued_not_scored(stored_adapter, damage):
    study, store, job = stored_adapter
    folder = store.adapter_path(job.key)
    if damage == "replaced":
        (folder / "adapter_model.safetensors").write_bytes(b"other valid weights" * 50)
    elif damage == "truncated metadata":
        (folder / "traitlens.json").write_text('{"ba')
    elif damage == "deleted file":
        (folder / "adapter_model.safetensors").unlink()
    else:
        import shutil

        shutil.rmtree(folder)
    fresh = Store(study.store)  # another process: nothing verified yet
    with pytest.raises(DamagedArtifactError, match="requeued: rerun to retrain it"):
        fresh.verified_adapter(job.key)
    record = fresh.jobs([job.key])[job.key]
    assert record.state == "failed" and "damaged adapter" in record.error
    assert fresh.adapter_path(job.key) is None and not folder.exists()
    assert plan_study(study).states(fresh)[job.key] == "failed"  # the next run trains it again


def test_doctor_finds_and_repairs(stored_adapter, tmp_path):
    study, store, job = stored_adapter
    study_file = tmp_path / "study.yaml"
    (store.adapter_path(job.key) / "adapter_model.safetensors").write_bytes(b"tampered")
    other = plan_study(study).train_jobs[1]
    store.start_job(other.key, "train", other.label, other.spec, worker="killed")  # left running
    (store.artifacts / "tmp" / "abc-123").mkdir(parents=True)
    found = traitlens("doctor", str(study_file))
    assert found.returncode == 1, found.stdout
    text = " ".join(found.stdout.split())
    assert "adapter_model.safetensors differs from what was written" in text
    assert "marked running, but no run holds the store" in text and "left by an interrupted job" in text
    repaired = traitlens("doctor", str(study_file), "--repair")
    assert repaired.returncode == 0 and "repaired: requeue it" in " ".join(repaired.stdout.split())
    again = traitlens("doctor", str(study_file))
    assert again.returncode == 0 and "sound" in again.stdout
    states = plan_study(study).states(Store(study.store))
    assert states[job.key] == "failed" and states[other.key] == "failed"


def test_a_corrupt_database_is_a_message_not_a_traceback(stored_adapter, tmp_path):
    study, store, _ = stored_adapter
    study_file = tmp_path / "study.yaml"
    database = store.root / "results.sqlite"
    for suffix in ("-wal", "-shm"):
        (store.root / f"results.sqlite{suffix}").unlink(missing_ok=True)
    database.write_bytes(b"this is not a database" * 200)
    for command in ("status", "plan", "traits", "report"):
        result = traitlens(command, str(study_file))
        assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr)
        assert "database cannot be used" in result.stderr or "no store" in result.stderr, (command, result.stderr)
    doctor = traitlens("doctor", str(study_file))
    assert doctor.returncode == 1 and "cannot be read" in doctor.stdout


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    from traitlens import cli

    def interrupted(**_):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.cli, "main", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130
    assert "interrupted; finished jobs are kept in the store: rerun the same command to resume" in capsys.readouterr().err


def test_a_full_disk_is_named(monkeypatch, capsys):
    import errno

    from traitlens import cli

    def full(**_):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cli.cli, "main", full)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2 and "no space left on the device" in capsys.readouterr().err

    def enospc(**_):
        raise OSError(errno.ENOSPC, "No space left on device", "/store/artifacts/x")

    monkeypatch.setattr(cli.cli, "main", enospc)
    with pytest.raises(SystemExit):
        cli.main()
    assert "no space left on the device" in capsys.readouterr().err


def test_validate_finds_what_used_to_fail_only_after_training(write_study, tmp_path, tiny_model):
    from conftest import MINIMAL

    lacking = write_study(MINIMAL + "lora: {target_modules: [q_proj, w_gate]}\n", "lacking.yaml")
    result = traitlens("validate", str(lacking))
    assert result.returncode == 2 and "lora.target_modules: w_gate not in smollm2-135m-instruct" in result.stderr
    assert "q_proj" in result.stderr  # the names it does have
    assert traitlens("validate", "--schema-only", str(lacking)).returncode == 0  # the file alone is fine
    missing = write_study(MINIMAL.replace("base: smollm2-135m-instruct", f"base: {tmp_path / 'no-such-model'}"),
                          "missing.yaml")
    result = traitlens("validate", str(missing))
    assert result.returncode == 2 and "base: cannot find" in result.stderr and "Traceback" not in result.stderr
    wide = write_study(TINY_TRAIN.format(base=tiny_model).replace("r: 4,", "r: 16,"), "wide.yaml")
    result = traitlens("validate", str(wide))  # the tiny model's k_proj maps 32 -> 16
    assert result.returncode == 2 and "lora.r: 16 is not below the width of k_proj" in result.stderr
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"num_attention_heads": "four"}))
    result = traitlens("validate", str(write_study(TINY_TRAIN.format(base=broken), "broken.yaml")))
    assert result.returncode == 2 and "cannot build" in result.stderr and "config.json" in result.stderr
    assert "Traceback" not in result.stderr
    rows = [{"input": f"question {i}", "options": "A. yes\nB. no", "answer": "C" if i == 3 else "A"} for i in range(6)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mc = write_study(MINIMAL.replace("targets:\n", f"""targets:
  - name: quiz
    dataset: {tmp_path / 'mc.jsonl'}
    kind: multiple_choice
    abilities: [reasoning]
"""), "mc.yaml")
    result = traitlens("validate", str(mc))
    assert result.returncode == 2
    assert "targets[0] (quiz): 1 of 6 items have an answer that is not one of their option letters" in result.stderr


def test_schema_only_validation_needs_no_torch_model_or_data(write_study):
    """The first tier checks the file alone: no torch import (seconds), no model, no dataset."""
    from conftest import MINIMAL

    study = write_study(MINIMAL.replace("catalog:sentiment-movie", "./not-downloaded.jsonl", 1))
    code = ("import sys; from traitlens import cli; sys.argv = ['traitlens', 'validate', '--schema-only', "
            f"{str(study)!r}]\ntry:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ok: study tiny" in result.stdout
