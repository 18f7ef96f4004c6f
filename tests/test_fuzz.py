"""Malformed studies and datasets, generated: every one gets exit 0 (still valid) or 2 (a
message), never a traceback, and none hangs. Seeded, so a failure reproduces. A longer run:
`FUZZ_SEEDS=100-109 FUZZ_CASES=100 .venv/bin/python -m pytest tests/test_fuzz.py` (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import random
import signal
import sys

import yaml

from conftest import MINIMAL
from traitlens import cli

VALUES = [None, "", " ", "x" * 300, -1, 0, 10**30, 1.5, float("nan"), float("inf"), True, [], {}, [[[]]],
          {"a": {"b": {"c": 1}}}, "catalog:nope", "../../../etc/passwd", "\u202e\u0000\ufffd", "\x00", "😀"]


def mutations(rng: random.Random, count: int):
    """(name, text) of study files: a value swapped for another type, a key dropped or
    misspelt, the file cut short, or garbage bytes."""
    study = yaml.safe_load(MINIMAL)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, path + (index,))

    walk(study, ())
    for case in range(count):
        data = json.loads(json.dumps(study))
        path = rng.choice(paths[1:])
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        kind = rng.choice(["value", "drop", "misspell", "truncate", "garbage"])
        if kind == "value":
            parent[path[-1]] = rng.choice(VALUES)
        elif kind == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind == "misspell" and isinstance(parent, dict):
            parent[f"{path[-1]}x"] = parent.pop(path[-1])
        text = yaml.safe_dump(data, allow_unicode=True)
        if kind == "truncate":
            text = text[: rng.randrange(len(text))]
        elif kind == "garbage":
            cut = rng.randrange(len(text))
            text = text[:cut] + "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(1, 20))) + text[cut:]
        yield f"{case}-{kind}-{'.'.join(map(str, path))}", text


def rows(rng: random.Random, count: int):
    """(name, bytes) of JSONL datasets with something wrong in them."""
    good = [{"input": f"review {i}", "answer": "positive" if i % 2 else "negative"} for i in range(8)]
    for case in range(count):
        lines = [json.dumps(r) for r in good]
        kind = rng.choice(["not json", "missing answer", "wrong type", "empty", "binary", "label", "nested"])
        index = rng.randrange(len(lines))
        if kind == "not json":
            lines[index] = lines[index][: rng.randrange(1, len(lines[index]))]
        elif kind == "missing answer":
            lines[index] = json.dumps({"input": "x"})
        elif kind == "wrong type":
            lines[index] = json.dumps({"input": rng.choice(VALUES[:14]), "answer": rng.choice(VALUES[:14])},
                                      allow_nan=True)
        elif kind == "empty":
            lines = []
        elif kind == "binary":
            yield f"{case}-{kind}", bytes(rng.randrange(256) for _ in range(200))
            continue
        elif kind == "label":
            lines[index] = json.dumps({"input": "x", "answer": "sarcastic"})
        else:
            lines[index] = json.dumps({"input": {"deep": [1, {"x": 2}]}, "answer": ["negative"]})
        yield f"{case}-{kind}", ("\n".join(lines) + "\n").encode()


def invoke(monkeypatch, capsys, *args) -> tuple[int, str]:
    """`traitlens ARGS` in this process (the same entry point and error handling as the
    command), with a generous alarm so a hang fails instead of stalling the suite."""
    monkeypatch.setattr(sys, "argv", ["traitlens", *args])

    def hang(*_):
        raise AssertionError(f"traitlens {' '.join(args)} still running after 120 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(120)
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, capsys.readouterr().err


def seeds(default: int) -> list[int]:
    first, _, last = os.environ.get("FUZZ_SEEDS", str(default)).partition("-")
    return list(range(int(first), int(last or first) + 1))


def test_malformed_studies_get_a_message(tmp_path, monkeypatch, capsys):
    outcomes = {}
    cases = [case for seed in seeds(20) for case in mutations(random.Random(seed), int(os.environ.get("FUZZ_CASES", 150)))]
    for name, text in cases:
        path = tmp_path / "study.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        code, err = invoke(monkeypatch, capsys, "validate", "--schema-only", str(path))
        assert code in (0, 2) and "Traceback" not in err, (name, text, err[-3000:])
        outcomes[code] = outcomes.get(code, 0) + 1
    assert outcomes.get(2, 0) >= 0.6 * len(cases)  # most mutations break the study, and each says how


def test_malformed_datasets_get_a_message(tmp_path, monkeypatch, capsys):
    cases = [case for seed in seeds(21) for case in rows(random.Random(seed), int(os.environ.get("FUZZ_CASES", 40)))]
    for name, content in cases:
        data = tmp_path / "data.jsonl"
        data.write_bytes(content)
        study = tmp_path / "study.yaml"
        study.write_text(MINIMAL.replace("dataset: catalog:sentiment-movie\n    labels", f"dataset: {data}\n    labels", 1))
        code, err = invoke(monkeypatch, capsys, "validate", str(study))
        assert code in (0, 2) and "Traceback" not in err, (name, content[:300], err[-3000:])
