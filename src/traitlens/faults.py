"""Crash points for fault-injection tests: a run that dies at a chosen moment, with no cleanup.

`TRAITLENS_CRASH=<point>` (or `<point>:<n>`) makes the process kill itself with SIGKILL the n-th
time (default the first) it reaches `<point>`, exactly as a power cut or the OOM killer would, so
tests can check that a rerun loses nothing and repeats nothing, at every phase, without waiting
for a lucky moment. Unset (always, outside tests) it costs one dictionary lookup per point.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = ("train_step", "checkpoint_write", "adapter_rename", "cell_write", "analysis", "report")
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    spec = os.environ.get("TRAITLENS_CRASH")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point == name:
        _reached[name] += 1
        if _reached[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
