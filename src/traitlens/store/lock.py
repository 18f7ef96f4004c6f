"""One writer per store: an OS file lock, plus a note saying who holds it.

The lock itself is `filelock` (fcntl/msvcrt), so it is released by the OS if the holder dies;
the JSON note next to it only serves to tell a second process what it is waiting on.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from traitlens.errors import StoreLockedError


@contextmanager
def write_lock(store_dir: Path, command: str, timeout: float = 0) -> Iterator[None]:
    """Hold the store's write lock for the duration; raise `StoreLockedError` if it is taken."""
    lock = FileLock(store_dir / "store.lock", timeout=timeout)
    note = store_dir / "store.lock.json"
    try:
        lock.acquire()
    except Timeout:
        raise StoreLockedError(_held_message(store_dir, note)) from None
    try:
        note.write_text(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.executable,
        }))
        yield
    finally:
        note.unlink(missing_ok=True)
        lock.release()


def holder(store_dir: Path) -> str | None:
    """Who holds the store's write lock right now, or None when nobody does."""
    lock = FileLock(store_dir / "store.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return _describe(store_dir / "store.lock.json")
    lock.release()
    return None


def _describe(note: Path) -> str:
    try:
        holder = json.loads(note.read_text())
        return (f"process {holder['pid']} on {holder['host']} running `{holder['command']}` "
                f"since {holder['since']}")
    except (OSError, ValueError, KeyError):
        return "another process (it left no note of who it is)"


def _held_message(store_dir: Path, note: Path) -> str:
    return (f"the store {store_dir} is locked by {_describe(note)}. Wait for it to finish, or "
            "point this study at another `store:` directory. The lock is released automatically "
            "when that process exits.")
