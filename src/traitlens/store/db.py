"""The result store: an SQLite database plus an artifact directory for adapter files.

SQLite because it is embedded, transactional and readable by any tool a researcher has. Each
result row and its job's state change are written in one transaction, and artifact folders are
moved into place with an atomic rename, so a crash never leaves a half-written result behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from traitlens.version import __version__
from traitlens.errors import TraitlensError
from traitlens.faults import crash_point
from traitlens.store.keys import canonical_json, content_key, file_digest
from traitlens.store.lock import holder, write_lock

SCHEMA_VERSION = 3  # 2: adapters.files_json, every adapter file's SHA-256; 3: forecasts
# Written by training next to the PEFT files: settings, base identity, data fingerprint, curve.
ADAPTER_META_FILE = "traitlens.json"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
  name TEXT PRIMARY KEY,
  config_json TEXT NOT NULL,
  config_key TEXT NOT NULL,
  traitlens_version TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  key TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('train', 'eval')),
  label TEXT NOT NULL,
  spec_json TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  worker TEXT,
  started_at REAL,
  finished_at REAL,
  wall_s REAL,
  error TEXT
);
CREATE TABLE IF NOT EXISTS adapters (
  key TEXT PRIMARY KEY REFERENCES jobs(key),
  source TEXT NOT NULL,
  seed INTEGER NOT NULL,
  path TEXT NOT NULL,
  meta_json TEXT NOT NULL,
  created_at REAL NOT NULL,
  files_json TEXT
);
CREATE TABLE IF NOT EXISTS cells (
  key TEXT PRIMARY KEY REFERENCES jobs(key),
  model TEXT NOT NULL,
  target TEXT NOT NULL,
  metrics_json TEXT NOT NULL,
  meta_json TEXT NOT NULL,
  n_items INTEGER NOT NULL,
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
  cell_key TEXT NOT NULL REFERENCES cells(key) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  gold TEXT,
  prediction TEXT,
  score REAL NOT NULL,
  choice_logprobs_json TEXT,
  generated TEXT,
  generated_tokens INTEGER,
  PRIMARY KEY (cell_key, idx)
);
CREATE TABLE IF NOT EXISTS analyses (
  study TEXT NOT NULL,
  name TEXT NOT NULL,
  input_key TEXT NOT NULL,
  result_json TEXT NOT NULL,
  created_at REAL NOT NULL,
  PRIMARY KEY (study, name)
);
-- Forecast cells (#23): a table of their own, so that a forecast can never replace a measured
-- cell. `measured` is the cell's measured delta, filled in once the full study has it; those
-- rows calibrate later forecasts' intervals.
CREATE TABLE IF NOT EXISTS forecasts (
  study TEXT NOT NULL,
  probe TEXT NOT NULL,
  budget REAL NOT NULL,
  source TEXT NOT NULL,
  target TEXT NOT NULL,
  delta REAL NOT NULL,
  low REAL,
  high REAL,
  spent REAL NOT NULL,
  measured REAL,
  created_at REAL NOT NULL,
  PRIMARY KEY (study, probe, budget, source, target)
);
"""

FORECAST_FIELDS = ["study", "probe", "budget", "source", "target", "delta", "low", "high", "spent", "measured"]
ITEM_FIELDS = ("gold", "prediction", "score", "choice_logprobs", "generated", "generated_tokens")


LOW_SPACE = 64 << 20  # bytes free under which a store's failed write is put down to a full disk
UNVERIFIED = ("no checksums were recorded for its files (stored before traitlens kept them, or the row was "
              "edited), so they cannot be verified")


class DamagedArtifactError(TraitlensError):
    """A stored file that is missing or not what was written."""


def adapter_file_meta(folder: Path) -> dict[str, Any] | None:
    """The `traitlens.json` beside an adapter's weights; None when it is missing or damaged."""
    try:
        meta = json.loads((folder / ADAPTER_META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by path relative to it."""
    return {str(path.relative_to(folder)): file_digest(path)
            for path in sorted(folder.rglob("*")) if path.is_file()}


@dataclass(frozen=True)
class JobRecord:
    key: str
    kind: str
    label: str
    state: str
    attempts: int
    error: str | None
    wall_s: float | None


class Store:
    """One store directory: `results.sqlite` and `artifacts/`. Reading needs no lock; write
    inside `with store.locked(command):` so two runs cannot interleave their jobs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.artifacts = self.root / "artifacts"
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(exist_ok=True)
        self._db = self.root / "results.sqlite"
        with self._connect() as conn:
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise TraitlensError(
                    f"the store {self.root} was written by a newer traitlens (schema {row[0]}, this "
                    f"one reads {SCHEMA_VERSION}); upgrade traitlens or use another `store:`.")
            if row is None or int(row[0]) < SCHEMA_VERSION:  # new, or written by an older traitlens
                columns = {c[1] for c in conn.execute("PRAGMA table_info(adapters)")}
                if "files_json" not in columns:  # schema 1: its adapters have no checksums yet
                    conn.execute("ALTER TABLE adapters ADD COLUMN files_json TEXT")
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._reconcile(conn)
        self._verified: set[str] = set()  # adapters whose files matched their checksums in this process

    @staticmethod
    def _reconcile(conn: sqlite3.Connection) -> None:
        """A job marked done must have the rows that prove it: its adapter, or its cell with
        items. Rows lost to a crash of another tool, a hand edit or a bad disk would otherwise
        be reported as done forever; such a job is marked failed, so the next run redoes it."""
        # EXISTS per done job walks the primary-key indexes: a store of a million items opens as fast.
        no_items = "NOT EXISTS (SELECT 1 FROM items WHERE items.cell_key = jobs.key)"
        lost = ("(kind = 'train' AND NOT EXISTS (SELECT 1 FROM adapters WHERE adapters.key = jobs.key)) OR "
                "(kind = 'eval' AND (NOT EXISTS (SELECT 1 FROM cells WHERE cells.key = jobs.key) OR " + no_items + "))")
        conn.execute(f"DELETE FROM cells WHERE key IN (SELECT key FROM jobs WHERE state = 'done' AND kind = 'eval' "
                     f"AND {no_items})")
        conn.execute(f"UPDATE jobs SET state = 'failed', error = 'marked done, but its result rows are missing "
                     f"from the store (found on opening it); the next run redoes it' WHERE state = 'done' AND ({lost})")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self._db, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            conn.execute("PRAGMA foreign_keys = ON")
            with conn:  # one transaction: committed on success, rolled back on any error
                yield conn
        except sqlite3.OperationalError as exc:
            # A write into the WAL on a full disk fails as "disk I/O error", which hides the cause.
            if "disk I/O error" in str(exc) and shutil.disk_usage(self.root).free < LOW_SPACE:
                raise OSError(errno.ENOSPC, f"no space left on the device holding the store {self.root} "
                                            f"(SQLite: {exc})", str(self.root)) from exc
            raise
        finally:
            conn.close()

    def locked(self, command: str):
        return write_lock(self.root, command)

    def lock_holder(self) -> str | None:
        return holder(self.root)

    # --- studies and jobs --------------------------------------------------------------

    def save_study(self, name: str, config: dict[str, Any]) -> None:
        now = time.time()
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "config_json = excluded.config_json, config_key = excluded.config_key, "
                "traitlens_version = excluded.traitlens_version, updated_at = excluded.updated_at",
                (name, canonical_json(config), content_key("study", config), __version__, now, now),
            )

    def study_config(self, name: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute("SELECT config_json FROM studies WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def jobs(self, keys: Iterable[str]) -> dict[str, JobRecord]:
        keys = list(keys)
        found: dict[str, JobRecord] = {}
        with self._connect() as conn:
            for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
                chunk = keys[start:start + 500]
                rows = conn.execute(
                    "SELECT key, kind, label, state, attempts, error, wall_s FROM jobs "
                    f"WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                found.update({row[0]: JobRecord(*row) for row in rows})
        return found

    def start_job(self, key: str, kind: str, label: str, spec: dict[str, Any], worker: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO jobs (key, kind, label, spec_json, state, attempts, worker, started_at) "
                "VALUES (?, ?, ?, ?, 'running', 1, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "state = 'running', attempts = attempts + 1, worker = excluded.worker, "
                "started_at = excluded.started_at, finished_at = NULL, wall_s = NULL, error = NULL",
                (key, kind, label, canonical_json(spec), worker, time.time()),
            )

    def fail_job(self, key: str, error: str) -> None:
        with self._connect() as conn:
            self._finish(conn, key, "failed", error)

    @staticmethod
    def _finish(conn: sqlite3.Connection, key: str, state: str, error: str | None = None) -> None:
        now = time.time()
        updated = conn.execute(
            "UPDATE jobs SET state = ?, error = ?, finished_at = ?, wall_s = ? - started_at "
            "WHERE key = ?", (state, error, now, now, key)).rowcount
        if updated != 1:
            raise RuntimeError(f"job {key} was never started in this store")

    # --- results -----------------------------------------------------------------------

    def put_adapter(self, key: str, source: str, seed: int, files: Path, meta: dict[str, Any]) -> Path:
        """Move a finished adapter folder into the store and mark its job done, atomically."""
        final = self.artifacts / "adapters" / key
        final.parent.mkdir(exist_ok=True)
        digests = file_digests(files)
        if final.exists():  # left by a crash after the move but before the commit below
            shutil.rmtree(final)
        os.replace(files, final)
        crash_point("adapter_rename")
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO adapters VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (key, source, seed, str(final.relative_to(self.root)),
                          canonical_json(meta), time.time(), canonical_json(digests)))
            self._finish(conn, key, "done")
        self._verified.add(key)
        return final

    def adapter_problems(self, key: str) -> list[str]:
        """What is wrong with a stored adapter: a recorded folder outside the store's adapters,
        files missing or not what was written (checked against the SHA-256 recorded when it was
        stored), or no checksums to check against (unverified). Empty when it is sound."""
        with self._connect() as conn:
            row = conn.execute("SELECT path, files_json FROM adapters WHERE key = ?", (key,)).fetchone()
        if row is None:
            return ["not in the store"]
        folder = self._inside(row[0])
        if folder is None:
            return [f"its recorded folder {row[0]!r} is not inside the store's {self.artifacts / 'adapters'}"]
        if not folder.is_dir():
            return [f"folder {folder} is missing"]
        if row[1] is None:
            return [UNVERIFIED]
        recorded = json.loads(row[1])
        problems = [f"{name} is missing" for name in recorded if not (folder / name).is_file()]
        found = file_digests(folder)
        problems += [f"{name} differs from what was written" for name, digest in recorded.items()
                     if name in found and found[name] != digest]
        problems += [f"{name} was added after it was written" for name in found if name not in recorded]
        return problems

    def verified_adapter(self, key: str) -> Path | None:
        """The adapter's folder once its files match their checksums (checked once per process);
        None when the store has no such adapter. A damaged adapter (or one whose recorded folder
        is outside the store) is requeued, so the next run retrains it, and `DamagedArtifactError`
        says so; an unverifiable one (no checksums) is refused with the fix. Neither is scored."""
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM adapters WHERE key = ?", (key,)).fetchone() is None:
                return None  # never stored (or requeued): the caller says so
        if key not in self._verified:
            problems = self.adapter_problems(key)
            if problems == [UNVERIFIED]:
                raise DamagedArtifactError(f"adapter {key[:12]}: {UNVERIFIED}; it is not scored. `traitlens doctor "
                                           "--repair` requeues it, and the next run retrains it.")
            if problems:
                self.requeue(key, f"damaged adapter: {'; '.join(problems)}")
                raise DamagedArtifactError(
                    f"adapter {key[:12]} is damaged ({'; '.join(problems)}); it was removed and its training "
                    "job requeued: rerun to retrain it.")
            self._verified.add(key)
        return self.adapter_path(key)

    def requeue(self, key: str, reason: str) -> None:
        """Forget a finished adapter (its row and files) and mark its training job failed with
        `reason`, so the next run trains it again. Its cells stay: they belong to the adapter
        that was written, which the checksums vouch for, and a retrained adapter gets the same key."""
        with self._connect() as conn:
            row = conn.execute("SELECT path FROM adapters WHERE key = ?", (key,)).fetchone()
            conn.execute("DELETE FROM adapters WHERE key = ?", (key,))
            conn.execute("UPDATE jobs SET state = 'failed', error = ? WHERE key = ?", (reason, key))
        folder = self._inside(row[0]) if row is not None else None
        if folder is not None:  # a recorded path leading elsewhere is forgotten, never deleted
            shutil.rmtree(folder, ignore_errors=True)
        self._verified.discard(key)

    def scratch_dir(self, key: str) -> Path:
        """A private folder on the store's filesystem, so `put_adapter`'s rename is atomic."""
        path = self.artifacts / "tmp" / f"{key}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def clean_scratch(self) -> None:
        """Delete the scratch folders of jobs that died (a kill leaves them behind). Only while
        holding the store's lock, before starting jobs: then no job is writing to one."""
        shutil.rmtree(self.artifacts / "tmp", ignore_errors=True)

    def adapter_path(self, key: str) -> Path | None:
        """The adapter's folder; None when it is not stored, or when its recorded path leads
        outside the store's adapters (`adapter_problems` names that)."""
        with self._connect() as conn:
            row = conn.execute("SELECT path FROM adapters WHERE key = ?", (key,)).fetchone()
        return self._inside(row[0]) if row else None

    def _inside(self, recorded: str) -> Path | None:
        """A path read from the database, resolved, if it is a folder under artifacts/adapters;
        else None. The database is data: a path in it must never lead a read or a delete
        outside the store."""
        root = (self.artifacts / "adapters").resolve()
        folder = (self.root / recorded).resolve()
        return self.root / recorded if folder != root and folder.is_relative_to(root) else None

    def adapter_meta(self, key: str) -> dict[str, Any] | None:
        """What training recorded with the adapter (settings, dtype, device, placement)."""
        with self._connect() as conn:
            row = conn.execute("SELECT meta_json FROM adapters WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_cell(self, key: str, model: str, target: str, metrics: dict[str, Any],
                 items: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        """Write a cell, all its items and its job's completion in one transaction."""
        with self._connect() as conn:
            conn.execute("DELETE FROM items WHERE cell_key = ?", (key,))
            conn.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (key, model, target, canonical_json(metrics), canonical_json(meta),
                          len(items), time.time()))
            conn.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(key, index, item.get("gold"), item.get("prediction"), float(item["score"]),
                  None if item.get("choice_logprobs") is None else json.dumps(item["choice_logprobs"]),
                  item.get("generated"), item.get("generated_tokens"))
                 for index, item in enumerate(items)],
            )
            crash_point("cell_write")  # inside the transaction: the kill rolls it back
            self._finish(conn, key, "done")

    def cell(self, key: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute("SELECT model, target, metrics_json, meta_json, n_items FROM cells "
                               "WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"key": key, "model": row[0], "target": row[1], "metrics": json.loads(row[2]),
                "meta": json.loads(row[3]), "n_items": row[4]}

    def put_analysis(self, study: str, name: str, input_key: str, result: dict[str, Any]) -> None:
        """Keep the latest analysis `name` of a study, with the key of the inputs it came from."""
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?, ?)",
                         (study, name, input_key, canonical_json(result), time.time()))

    def analysis(self, study: str, name: str) -> tuple[str, dict[str, Any]] | None:
        with self._connect() as conn:
            row = conn.execute("SELECT input_key, result_json FROM analyses WHERE study = ? AND name = ?",
                               (study, name)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def put_forecast(self, study: str, probe: str, budget: float, spent: float, cells: pd.DataFrame) -> None:
        """Keep the latest forecast of `study` by `probe` at `budget`: `cells` has source, target,
        delta, low, high (NaN where none) and measured (NaN until the full study has the cell)."""
        rows = [(study, probe, budget, row.source, row.target, float(row.delta), _real(row.low), _real(row.high),
                 spent, _real(row.measured), time.time()) for row in cells.itertuples()]
        with self._connect() as conn:
            conn.executemany("INSERT OR REPLACE INTO forecasts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def forecasts(self, study: str | None = None) -> pd.DataFrame:
        """Stored forecast cells, of one study or of all (one row per study, probe, budget, cell)."""
        where, args = ("WHERE study = ?", (study,)) if study else ("", ())
        with self._connect() as conn:
            rows = conn.execute(f"SELECT study, probe, budget, source, target, delta, low, high, spent, measured "
                                f"FROM forecasts {where} ORDER BY study, probe, budget, source, target", args).fetchall()
        numbers = {name: float for name in ("budget", "delta", "low", "high", "spent", "measured")}
        return pd.DataFrame(rows, columns=FORECAST_FIELDS).astype(numbers)  # NULL reads as NaN

    def items(self, cell_key: str) -> list[dict[str, Any]]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(ITEM_FIELDS).replace('choice_logprobs', 'choice_logprobs_json')} "
                "FROM items WHERE cell_key = ? ORDER BY idx", (cell_key,)).fetchall()
        out = []
        for row in rows:
            item = dict(zip(ITEM_FIELDS, row))
            if item["choice_logprobs"] is not None:
                item["choice_logprobs"] = json.loads(item["choice_logprobs"])
            out.append(item)
        return out


def _real(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
