from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from traitlens.errors import StoreLockedError, TraitlensError
from traitlens.store import Store, content_key
from traitlens.store.db import SCHEMA_VERSION, UNVERIFIED, DamagedArtifactError
from traitlens.store.doctor import checkup
from traitlens.store.keys import canonical_json

ITEMS = [
    {"gold": "positive", "prediction": "positive", "score": 1.0,
     "choice_logprobs": {"negative": -2.1, "positive": -0.2}},
    {"gold": "negative", "prediction": "positive", "score": 0.0,
     "choice_logprobs": {"negative": -1.3, "positive": -0.4}},
    {"gold": "7", "prediction": "7", "score": 1.0, "generated": "7 apples", "generated_tokens": 3},
]


def test_content_key_is_canonical_and_sensitive():
    a = {"lora": {"r": 8, "alpha": 16.0}, "seed": 0}
    b = {"seed": 0, "lora": {"alpha": 16, "r": 8}}  # other order, 16 vs 16.0
    assert content_key("train", a) == content_key("train", b)
    assert content_key("train", a) != content_key("eval", a)
    assert content_key("train", a) != content_key("train", {**a, "seed": 1})
    assert len(content_key("train", a)) == 32
    assert canonical_json({"b": 1, "a": [Path("/x"), 2.5]}) == '{"a":["/x",2.5],"b":1}'


def test_cell_roundtrip_and_job_timing(tmp_path):
    store = Store(tmp_path / "store")
    store.start_job("k1", "eval", "eval base on movie", {"target": "movie"}, worker="test")
    assert store.jobs(["k1", "missing"])["k1"].state == "running"
    store.put_cell("k1", "base", "movie", {"accuracy": 2 / 3}, ITEMS, {"template": "{input}"})
    job = store.jobs(["k1"])["k1"]
    assert (job.state, job.attempts) == ("done", 1) and job.wall_s >= 0
    cell = store.cell("k1")
    assert cell["metrics"] == {"accuracy": 2 / 3} and cell["n_items"] == 3
    assert cell["meta"] == {"template": "{input}"}
    items = store.items("k1")
    assert [i["gold"] for i in items] == ["positive", "negative", "7"]
    assert items[1]["choice_logprobs"] == {"negative": -1.3, "positive": -0.4}
    assert items[2]["generated"] == "7 apples" and items[2]["generated_tokens"] == 3
    # The store is plain SQLite: any tool can read it.
    with sqlite3.connect(tmp_path / "store" / "results.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (3,)


def test_failed_cell_write_leaves_nothing_half_done(tmp_path):
    store = Store(tmp_path)
    store.start_job("k1", "eval", "eval", {}, worker="test")
    broken = ITEMS[:2] + [{"gold": "x"}]  # no score: fails after the cell row was inserted
    with pytest.raises(KeyError):
        store.put_cell("k1", "base", "movie", {"accuracy": 0.5}, broken, {})
    assert store.cell("k1") is None and store.items("k1") == []
    assert store.jobs(["k1"])["k1"].state == "running"


def test_failed_job_records_error_and_retry_counts_attempts(tmp_path):
    store = Store(tmp_path)
    store.start_job("k1", "train", "train movie", {}, worker="test")
    store.fail_job("k1", "RuntimeError: out of memory")
    job = store.jobs(["k1"])["k1"]
    assert (job.state, job.error) == ("failed", "RuntimeError: out of memory")
    store.start_job("k1", "train", "train movie", {}, worker="test")
    job = store.jobs(["k1"])["k1"]
    assert (job.state, job.attempts, job.error) == ("running", 2, None)


def test_adapter_moved_into_place_atomically(tmp_path):
    store = Store(tmp_path)
    store.start_job("a1", "train", "train movie", {}, worker="test")
    scratch = store.scratch_dir("a1")
    (scratch / "adapter_model.safetensors").write_bytes(b"weights")
    # A folder left by an earlier crash between the move and the commit is replaced.
    (store.artifacts / "adapters" / "a1").mkdir(parents=True)
    (store.artifacts / "adapters" / "a1" / "stale").write_text("old")
    final = store.put_adapter("a1", "movie", 0, scratch, {"steps": 4})
    assert sorted(p.name for p in final.iterdir()) == ["adapter_model.safetensors"]
    assert not scratch.exists() and store.adapter_path("a1") == final
    assert store.jobs(["a1"])["a1"].state == "done"


def test_many_keys_lookup(tmp_path):
    store = Store(tmp_path)
    for index in range(3):
        store.start_job(f"k{index}", "eval", "e", {}, worker="t")
    keys = [f"k{index}" for index in range(1200)]  # more than one SQLite parameter chunk
    assert sorted(store.jobs(keys)) == ["k0", "k1", "k2"]


def test_study_config_saved(tmp_path):
    store = Store(tmp_path)
    store.save_study("tiny", {"name": "tiny", "training": {"lr": 1}})
    store.save_study("tiny", {"name": "tiny", "training": {"lr": 2}})
    assert store.study_config("tiny") == {"name": "tiny", "training": {"lr": 2}}


def test_newer_store_schema_is_refused(tmp_path):
    Store(tmp_path)
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(TraitlensError, match="newer traitlens"):
        Store(tmp_path)


def _store_adapter(store: Store, key: str) -> None:
    """A finished adapter of one file, stored as training stores one."""
    store.start_job(key, "train", "train movie", {}, worker="test")
    scratch = store.scratch_dir(key)
    (scratch / "adapter_model.safetensors").write_bytes(b"weights")
    store.put_adapter(key, "movie", 0, scratch, {})


def test_a_schema_1_store_is_upgraded_and_its_unchecksummed_adapters_wait_for_repair(tmp_path):
    store = Store(tmp_path)
    _store_adapter(store, "a1")
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:  # as traitlens 0.1 left it
        conn.execute("ALTER TABLE adapters DROP COLUMN files_json")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    upgraded = Store(tmp_path)
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert conn.execute("SELECT files_json FROM adapters").fetchall() == [(None,)]
    assert upgraded.adapter_problems("a1") == [UNVERIFIED]  # nothing recorded to check against
    with pytest.raises(DamagedArtifactError, match="doctor --repair"):  # never scored unverified
        upgraded.verified_adapter("a1")
    assert store.adapter_path("a1").is_dir()  # refused, not deleted: the user chooses
    found, left = checkup(upgraded, fix=True)
    assert [f.kind for f in found] == ["adapter"] and not left
    assert upgraded.adapter_path("a1") is None and upgraded.jobs(["a1"])["a1"].state == "failed"  # retrained next


def test_a_recorded_folder_outside_the_store_is_never_read_or_deleted(tmp_path):
    store = Store(tmp_path / "store")
    _store_adapter(store, "a1")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "thesis.tex").write_text("years of work")
    with sqlite3.connect(tmp_path / "store" / "results.sqlite") as conn:  # a hand edit, or a bad disk
        conn.execute("UPDATE adapters SET path = ?", (os.path.relpath(outside, tmp_path / "store"),))
    store = Store(tmp_path / "store")
    assert store.adapter_path("a1") is None
    assert "not inside the store" in store.adapter_problems("a1")[0]
    found, left = checkup(store, fix=True)
    assert [f.kind for f in found] == ["adapter"] and not left
    assert (outside / "thesis.tex").read_text() == "years of work"  # repair forgot the row, deleted nothing
    assert store.jobs(["a1"])["a1"].state == "failed"  # the next run retrains it


def test_repair_deletes_no_scratch_folder_that_leads_outside_the_store(tmp_path):
    store = Store(tmp_path / "store")
    outside = tmp_path / "elsewhere"
    (outside / "keep").mkdir(parents=True)
    (store.artifacts / "tmp").symlink_to(outside, target_is_directory=True)
    found, left = checkup(store, fix=True)
    assert found and all("not inside the store" in f.problem for f in left)
    assert (outside / "keep").is_dir()


def test_done_jobs_without_their_rows_are_requeued_on_open(tmp_path):
    store = Store(tmp_path)
    _store_adapter(store, "a1")
    for key in ("c1", "c2"):
        store.start_job(key, "eval", f"eval base on {key}", {}, worker="test")
        store.put_cell(key, "base", key, {"accuracy": 1.0}, ITEMS, {})
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:  # another tool dropped results
        conn.execute("DROP TABLE items")
        conn.execute("DELETE FROM adapters")
    states = {key: record.state for key, record in Store(tmp_path).jobs(["a1", "c1", "c2"]).items()}
    assert states == {"a1": "failed", "c1": "failed", "c2": "failed"}  # redone by the next run, not "done"
    assert Store(tmp_path).cell("c1") is None


def test_second_writer_is_told_who_holds_the_lock(tmp_path):
    Store(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from traitlens.store import Store
        with Store(Path({str(tmp_path)!r})).locked("traitlens run other.yaml"):
            print("locked", flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError) as info:
            with Store(tmp_path).locked("traitlens run this.yaml"):
                pass
        message = str(info.value)
        assert f"process {holder.pid}" in message and "traitlens run other.yaml" in message
    finally:
        holder.communicate("\n", timeout=30)
    # Released on exit: the next writer gets it, and the holder's note is gone.
    with Store(tmp_path).locked("traitlens run this.yaml"):
        assert "this.yaml" in (tmp_path / "store.lock.json").read_text()
    assert not (tmp_path / "store.lock.json").exists()


def test_lock_released_when_holder_dies(tmp_path):
    Store(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from traitlens.store import Store
        with Store(Path({str(tmp_path)!r})).locked("doomed"):
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=30)
    deadline = time.time() + 10
    while True:
        try:
            with Store(tmp_path).locked("next"):
                break
        except StoreLockedError:
            assert time.time() < deadline, "lock not released after its holder was killed"
            time.sleep(0.1)


def test_a_disk_io_error_on_a_full_disk_is_named_as_a_full_disk(tmp_path, monkeypatch):
    """SQLite reports a WAL write on a full disk as "disk I/O error"; the store says what it is."""
    import errno
    import shutil

    from traitlens.store import db

    store = Store(tmp_path)

    class FullDisk:
        def __init__(self, real):
            self.real = real

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("disk I/O error")
            return self.real.execute(sql, *args)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            self.real.close()

    connect = sqlite3.connect
    monkeypatch.setattr(db.sqlite3, "connect", lambda *a, **k: FullDisk(connect(*a, **k)))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(OSError, match="no space left on the device holding the store") as raised:
        store.start_job("k", "eval", "eval base on movie", {}, worker="test")
    assert raised.value.errno == errno.ENOSPC
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 0, 10**12))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):  # space left: another cause, kept
        store.start_job("k", "eval", "eval base on movie", {}, worker="test")
