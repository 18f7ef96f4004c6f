"""Load a dataset spec into a table with canonical columns, then apply its transforms.

Canonical columns: `input`, `answer` (always strings), and `passage` / `options` when the spec
maps them. Every user mistake (missing file, split or column, a label outside the label set,
an empty result) is a `TraitlensError` naming the spec's field and the fix.
"""

from __future__ import annotations

import difflib
import re
import string
from pathlib import Path

import numpy as np
import pandas as pd

from traitlens.config.schema import DatasetSpec, Study
from traitlens.data.catalog import catalog_splits, materialize
from traitlens.data.leakage import check_leakage
from traitlens.config.reference import FILE_SUFFIXES, parse_reference, split_file
from traitlens.data.transforms import apply_transform
from traitlens.errors import TraitlensError

OPTIONAL_COLUMNS = ("passage", "options")
MAX_DATASET_BYTES = 2 << 30
MAX_OPTIONS = len(string.ascii_uppercase)  # options are lettered A-Z
OPTION_LINE = re.compile(r"^([A-Z])\.\s*(.*)$", flags=re.M)  # "A. text": one option of a multiple-choice item


def prepare(spec: DatasetSpec, field: str) -> pd.DataFrame:
    """The rows a study uses for `spec`: loaded, mapped, transformed and checked.

    `field` names the spec in errors, e.g. "sources[0] (movie)".
    """
    table = _canonical(read_table(spec, field), spec, field)
    for index, transform in enumerate(spec.transforms):
        table = apply_transform(table, transform, spec.seed, f"{field}.transforms[{index}]")
    if table.empty:
        raise TraitlensError(f"{field}: {spec.dataset} (split {spec.split!r}) has no rows"
                             f"{' left after its transforms' if spec.transforms else ''}; "
                             "check the split and the transforms.")
    if spec.labels:
        _check_labels(table, spec, field)
    return table.reset_index(drop=True)


def read_table(spec: DatasetSpec, field: str) -> pd.DataFrame:
    """The raw split named by `spec`, with the origin's own column names."""
    ref = parse_reference(spec.dataset)
    if ref.kind == "catalog":
        splits = catalog_splits(ref.value)
        if spec.split not in splits:
            raise TraitlensError(f"{field}.split: catalog:{ref.value} has no split {spec.split!r}; "
                                 f"it has {', '.join(splits)}.")
        return pd.read_json(materialize(ref.value) / f"{spec.split}.jsonl", lines=True, dtype=False)
    if ref.kind == "file":
        return _read_local(Path(ref.value), spec.split, field)
    return _read_hub(ref.value, spec, field)


def _read_local(path: Path, split: str, field: str) -> pd.DataFrame:
    """A file is one split, whatever `split:` says; a folder holds one file per split."""
    found = split_file(path, split)
    if found is None and path.is_dir():
        present = sorted({p.stem for p in path.iterdir() if p.suffix in FILE_SUFFIXES})
        raise TraitlensError(f"{field}.split: no {split}.jsonl/.json/.csv/.parquet in {path}; "
                             f"splits there: {', '.join(present) or 'none'}.")
    if found is None:
        raise TraitlensError(f"{field}.dataset: file {path} does not exist; fix the path "
                             "(relative paths are relative to the study file).")
    path = found
    if (size := path.stat().st_size) > MAX_DATASET_BYTES:  # every reader here loads the file whole
        raise TraitlensError(f"{field}.dataset: {path} is {size / 2**30:.1f} GiB; a dataset file is read whole, "
                             f"so files over {MAX_DATASET_BYTES >> 30} GiB are refused. Subsample it into a smaller "
                             "file first (a study trains on a few hundred rows).")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if suffix == ".json":
            return pd.read_json(path, dtype=False)
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except ValueError as exc:
        raise TraitlensError(f"{field}.dataset: cannot read {path} as {suffix[1:]} ({exc}).")
    raise TraitlensError(f"{field}.dataset: {path} is not a {'/'.join(FILE_SUFFIXES)} file.")


def _read_hub(dataset_id: str, spec: DatasetSpec, field: str) -> pd.DataFrame:
    import datasets  # heavy, and only needed for hub datasets

    try:
        loaded = datasets.load_dataset(dataset_id, spec.subset, split=spec.split, revision=spec.revision)
    except Exception as exc:  # the hub client raises many types; all mean "could not load it"
        raise TraitlensError(
            f"{field}.dataset: could not load {dataset_id!r} (subset {spec.subset}, split "
            f"{spec.split!r}) with Hugging Face datasets: {type(exc).__name__}: {str(exc)[:300]}. "
            "Check the id, subset and split; without hub access use a `catalog:` entry or a local "
            "file instead.") from None
    return loaded.to_pandas()


def _canonical(raw: pd.DataFrame, spec: DatasetSpec, field: str) -> pd.DataFrame:
    mapping = {"input": spec.columns.input, "answer": spec.columns.answer}
    mapping.update({name: getattr(spec.columns, name) for name in OPTIONAL_COLUMNS
                    if getattr(spec.columns, name)})
    if spec.columns.passage is None and "passage" in raw.columns:
        mapping["passage"] = "passage"  # catalog rows carry their passage under its own name
    if spec.columns.options is None and "options" in raw.columns:
        mapping["options"] = "options"
    missing = [(name, column) for name, column in mapping.items() if column not in raw.columns]
    if missing:
        available = [str(c) for c in raw.columns]
        problems = []
        for name, column in missing:
            guess = difflib.get_close_matches(column, available, n=1)
            hint = f" Did you mean '{guess[0]}'?" if guess else ""
            problems.append(f"{field}.columns.{name}: column {column!r} is not in {spec.dataset}.{hint}")
        raise TraitlensError("\n".join(problems) + f"\nIts columns are: {', '.join(available)}.")
    table = pd.DataFrame({name: raw[column] for name, column in mapping.items()})
    if "options" in table:
        table = _letter_options(table, spec, field)
    # Unlabelled rows (e.g. hidden test answers) cannot be trained or scored on.
    keep = table["input"].notna() & table["answer"].notna()
    table = table[keep].copy()
    table["answer"] = table["answer"].map(_as_text).astype(str)  # astype: an empty column keeps its dtype
    table["input"] = table["input"].astype(str)
    table = table[(table["answer"] != "") & (table["input"].str.strip() != "")]
    return table.reset_index(drop=True)


def _letter_options(table: pd.DataFrame, spec: DatasetSpec, field: str) -> pd.DataFrame:
    """Options given as a list become "A. ...\\nB. ..."; an integer answer becomes its letter.
    Options already written as text are kept; any other value is refused, naming its rows."""
    table = table.copy()
    table["options"] = table["options"].map(lambda v: list(v) if isinstance(v, (tuple, np.ndarray)) else v)
    problems = [(row, why) for row, value in table["options"].items() if (why := _option_problem(value))]
    if problems:
        shown = "; ".join(f"row {row}: {why}" for row, why in problems[:5])
        raise TraitlensError(
            f"{field}.options: {len(problems)} row(s) of {spec.dataset} have unusable options ({shown}"
            f"{'; ...' if len(problems) > 5 else ''}). Give each item a list of 2 to {MAX_OPTIONS} option texts, "
            "or the text 'A. ...' with one option per line.")
    letters = string.ascii_uppercase
    listed = table["options"].map(lambda v: isinstance(v, list))
    table["answer"] = [letters[a] if is_list and isinstance(a, int) and not isinstance(a, bool) and 0 <= a < len(o)
                       else a for a, o, is_list in zip(table["answer"], table["options"], listed)]
    table["options"] = [("\n".join(f"{letters[i]}. {_as_text(text)}" for i, text in enumerate(o)) if is_list else o)
                        for o, is_list in zip(table["options"], listed)]
    return table


def _option_problem(value: object) -> str | None:
    """Why one item's options cannot be used, or None."""
    if isinstance(value, str):
        return None if value.strip() else "empty options"
    if value is None or (isinstance(value, float) and value != value):
        return None  # no options: fine for other kinds; a multiple-choice item is refused by `_check_options`
    if not isinstance(value, list):
        return f"a {type(value).__name__}, not a list of option texts"
    if not 2 <= len(value) <= MAX_OPTIONS:
        return f"{len(value)} options (2 to {MAX_OPTIONS} can be lettered A-Z)"
    odd = [type(v).__name__ for v in value if isinstance(v, bool) or not isinstance(v, (str, int, float))]
    return f"an option is a {odd[0]}, not text" if odd else None


def _as_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _check_labels(table: pd.DataFrame, spec: DatasetSpec, field: str) -> None:
    outside = table.loc[~table["answer"].isin(spec.labels), "answer"].value_counts()
    if not outside.empty:
        found = ", ".join(f"{label!r} ({count} rows)" for label, count in outside.head(5).items())
        raise TraitlensError(
            f"{field}.labels: answers outside the label set {spec.labels}: {found}. Add them to "
            "`labels:`, or map them with a `relabel:` transform.")
    present = set(table["answer"])
    unseen = [label for label in spec.labels if label not in present]
    if unseen:  # a class no item has: nothing can be right about it, and it skews chance and macro-F1
        raise TraitlensError(
            f"{field}.labels: {', '.join(map(repr, unseen))} has no rows in {spec.dataset}"
            f"{' after its transforms' if spec.transforms else ''}; remove it from `labels:`, or check its spelling.")


def _check_options(table: pd.DataFrame, field: str) -> None:
    """Every multiple-choice answer must be one of its item's option letters ("A. ..." lines)."""
    def letters(options: object) -> set[str]:
        return {letter for letter, _ in OPTION_LINE.findall(options)} if isinstance(options, str) else set()

    bad = [(row.input, row.answer) for row in table.itertuples() if row.answer not in letters(getattr(row, "options", None))]
    if bad:
        text, answer = bad[0]
        raise TraitlensError(
            f"{field}: {len(bad)} of {len(table)} items have an answer that is not one of their option letters "
            f"(first: {text[:60]!r}, answer {answer!r}); multiple_choice needs options written 'A. ...' per line "
            "and the answer as the letter (or options as a list and the answer as its index).")


def prepare_study(study: Study) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Every source and target table of a study; all their problems reported at once."""
    tables: dict[str, dict[str, pd.DataFrame]] = {"sources": {}, "targets": {}}
    problems = []
    for section in tables:
        for index, spec in enumerate(getattr(study, section)):
            try:
                field = f"{section}[{index}] ({spec.name})"
                tables[section][spec.name] = prepare(spec, field)
                if getattr(spec, "kind", None) == "multiple_choice":
                    _check_options(tables[section][spec.name], field)
            except TraitlensError as exc:
                problems.append(str(exc))
    if problems:
        raise TraitlensError("\n".join(problems))
    check_leakage(tables["sources"], tables["targets"])
    return tables["sources"], tables["targets"]
