"""`traitlens doctor`: check a store end to end, and repair what is safe to repair.

Checks: SQLite's own integrity check; every adapter's files against the SHA-256 recorded when
it was stored; jobs marked running while no run holds the store (interrupted); scratch folders
and training checkpoints that no running job owns. Repairs never touch a finished result that
checks out: a damaged adapter is requeued (its row and files removed, its training job marked
failed so the next run retrains it), an interrupted job is marked failed (the next run redoes
it), and leftover scratch and checkpoint folders of finished jobs are deleted. A damaged
database is reported with what to do; it is not rewritten.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from traitlens.store.db import Store


@dataclass(frozen=True)
class Finding:
    kind: str  # database, adapter, job, scratch, checkpoint
    subject: str
    problem: str
    repair: str | None  # what --repair does; None when it is the user's to do


class Checkup(NamedTuple):
    """`Study.doctor`: what was `found`, and what is `left` for the user (without repairing:
    everything found)."""

    found: list[Finding]
    left: list[Finding]


def checkup(store: Store, fix: bool = False) -> Checkup:
    """Examine the store and, with `fix`, repair what is safe; hold the store's lock."""
    findings = examine(store)
    return Checkup(findings, repair(store, findings) if fix else findings)


def examine(store: Store) -> list[Finding]:
    """Everything wrong with the store. Call it while holding the store's lock, so no run is
    writing meanwhile."""
    try:
        with sqlite3.connect(store.root / "results.sqlite") as conn:
            verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            adapters = [row[0] for row in conn.execute("SELECT key FROM adapters ORDER BY key")]
            running = conn.execute("SELECT key, label FROM jobs WHERE state = 'running'").fetchall()
            done = {row[0] for row in conn.execute("SELECT key FROM jobs WHERE state = 'done'")}
    except sqlite3.DatabaseError as exc:
        return [Finding("database", str(store.root / "results.sqlite"), f"cannot be read: {exc}",
                        None)]
    findings = []
    if verdict != ["ok"]:
        findings.append(Finding("database", str(store.root / "results.sqlite"),
                                "integrity check failed: " + "; ".join(verdict[:5]), None))
    for key in adapters:
        problems = store.adapter_problems(key)
        if problems:
            findings.append(Finding("adapter", key, "; ".join(problems), "requeue it: the next run retrains it"))
    for key, label in running:
        findings.append(Finding("job", label, "marked running, but no run holds the store: it was interrupted",
                                "mark it failed: the next run redoes it"))
    tmp = store.artifacts / "tmp"
    for folder in sorted(tmp.iterdir()) if tmp.is_dir() else []:
        findings.append(Finding("scratch", str(folder), "left by an interrupted job", "delete it"))
    checkpoints = store.artifacts / "checkpoints"
    for folder in sorted(checkpoints.iterdir()) if checkpoints.is_dir() else []:
        if folder.name in done:
            findings.append(Finding("checkpoint", str(folder), "belongs to a finished adapter", "delete it"))
    return findings


def repair(store: Store, findings: list[Finding]) -> list[Finding]:
    """Apply every repair that is safe; return the findings left for the user."""
    left = []
    for finding in findings:
        if finding.repair is None:
            left.append(finding)
        elif finding.kind == "adapter":
            store.requeue(finding.subject, f"requeued by traitlens doctor: {finding.problem}")
        elif finding.kind == "job":
            with sqlite3.connect(store.root / "results.sqlite") as conn:
                conn.execute("UPDATE jobs SET state = 'failed', error = 'interrupted (found by traitlens doctor)' "
                             "WHERE label = ? AND state = 'running'", (finding.subject,))
        elif _inside_store(store, Path(finding.subject)):  # scratch and checkpoint folders of no running job
            shutil.rmtree(finding.subject, ignore_errors=True)
        else:  # e.g. artifacts/tmp made a link to elsewhere: never delete outside the store
            left.append(Finding(finding.kind, finding.subject, f"{finding.problem}, but it is not inside the store "
                                f"{store.root}: not deleted", None))
    return left


def _inside_store(store: Store, folder: Path) -> bool:
    return not folder.is_symlink() and folder.resolve().is_relative_to(store.root.resolve())
