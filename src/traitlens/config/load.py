"""Read a study YAML file into a `Study`, reporting every problem at once with file and line.

pydantic validates; this module adds what a user needs around it: YAML positions (PyYAML's
composer keeps them, its plain loader does not), `sources:`/`targets:` entries that reference
other files, paths made relative to the file that wrote them, and error messages that name the
field, say what was wrong and how to fix it, with a did-you-mean for misspelt keys and values.
"""

from __future__ import annotations

import difflib
import stat
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from traitlens.config.schema import Study
from traitlens.config.reference import looks_like_path, parse_reference, resolve_path
from traitlens.errors import ConfigError, TraitlensError

Loc = tuple[str | int, ...]
# A study file is a few kilobytes; these bounds stop a crafted one (a YAML "billion laughs" of
# nested aliases, a self-referencing alias, thousands of nesting levels) before anything walks
# or validates its expansion.
MAX_FILE_BYTES = 1 << 20
MAX_VALUES = 100_000  # values once aliases are expanded
MAX_DEPTH = 64


@dataclass(frozen=True)
class Position:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def load_study(path: str | Path) -> Study:
    """Load and validate a study file; raise `ConfigError` listing every problem found."""
    path = Path(path)
    data, positions, problems = _read_yaml(path, ())
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["the file must be a mapping of settings (name:, base:, sources:, ...)"])
    for section in ("sources", "targets"):
        if isinstance(data.get(section), list):
            data[section], extra = _expand_includes(data[section], section, path, positions)
            problems += extra
    _resolve_paths(data, path.parent)
    try:
        study = Study.model_validate(data)
    except ValidationError as exc:
        problems += _describe(exc, data, positions)
    if problems:
        raise ConfigError(str(path), sorted(problems, key=_file_line))
    return study


def load_spec(path: str | Path, model: type[BaseModel]) -> BaseModel:
    """One dataset spec (a source or a target) from its own YAML file, checked like a study."""
    path = Path(path)
    data, positions, problems = _read_yaml(path, ())
    if isinstance(data, dict):
        _resolve_spec_paths(data, path.parent)
        try:
            spec = model.model_validate(data)
        except ValidationError as exc:
            problems += _describe(exc, data, positions, model)
        else:
            if not problems:
                return spec
    else:
        problems.append(f"{path}: the file must be one {model.__name__.lower()} mapping (name:, dataset:, ...)")
    raise ConfigError(str(path), sorted(problems, key=_file_line))


def _file_line(problem: str) -> tuple[str, int]:
    file, _, rest = problem.partition(":")
    line = rest.partition(":")[0]
    return file, int(line) if line.isdigit() else 0


# --- YAML with positions -------------------------------------------------------------------


def _read_yaml(path: Path, prefix: Loc) -> tuple[Any, dict[Loc, Position], list[str]]:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read forever; a device never ends
            raise TraitlensError(f"{path}: not a regular file (a pipe, device or socket); give a YAML file.")
        size = info.st_size
        if size > MAX_FILE_BYTES:
            raise TraitlensError(f"{path}: {size:,} bytes; a study or spec file is at most {MAX_FILE_BYTES:,}. "
                                 "Put data in dataset files, not in the study.")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraitlensError(f"{path}: no such file. Check the path, or run from the study's folder.")
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise TraitlensError(f"{path}: cannot read it as a YAML text file ({exc}).")
    except OSError as exc:  # a symlink loop, a name too long, no permission: said with the path, not a traceback
        raise TraitlensError(f"{path}: cannot open it ({exc.strerror or exc}). Check the path.") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        positions: dict[Loc, Position] = {}
        problems: list[str] = []
        if node is not None:  # bounded: raises before a crafted file's expansion is built
            _walk(node, prefix, str(path), positions, problems)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TraitlensError(f"{where}: not valid YAML: {exc.problem}. Check indentation and quoting there.")
    except RecursionError:
        raise TraitlensError(f"{path}: nested too deeply to read; a study needs a handful of levels.") from None
    except yaml.YAMLError as exc:  # e.g. a control character the YAML reader refuses
        raise TraitlensError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return data, positions, problems


def _walk(root: yaml.Node, prefix: Loc, file: str, out: dict[Loc, Position], problems: list[str]) -> None:
    """Every value's position (a key's line for mapping values), and keys written twice.
    Iterative, with a budget: aliases are followed as many times as they are used, so a crafted
    file could otherwise expand without end."""
    stack: list[tuple[yaml.Node, Loc]] = [(root, prefix)]
    values = 0
    while stack:
        node, loc = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise TraitlensError(f"{file}: more than {MAX_VALUES:,} values once its YAML aliases are expanded "
                                 "(an alias used inside itself, or aliases nested many times over); a study needs "
                                 "a few hundred. Write the values out instead.")
        if len(loc) - len(prefix) > MAX_DEPTH:
            raise TraitlensError(f"{file}:{node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep "
                                 "(or an alias used inside itself); a study needs a handful.")
        out.setdefault(loc, Position(file, node.start_mark.line + 1))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]: 1` is valid YAML, not a setting
                    raise TraitlensError(f"{file}:{key_node.start_mark.line + 1}: {_dotted(loc) or 'the file'}: a key "
                                         "is a list or mapping; every key here is a plain name (e.g. `seeds:`). "
                                         "Write it as text.")
                key = key_node.value
                if key in seen:  # safe_load keeps the last silently; a user means one of them
                    problems.append(f"{file}:{key_node.start_mark.line + 1}: {_dotted(loc + (key,))}: "
                                    "key written twice in one mapping; keep one")
                seen.add(key)
                out[loc + (key,)] = Position(file, key_node.start_mark.line + 1)
                stack.append((value_node, loc + (key,)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, loc + (index,)) for index, item in enumerate(node.value))


def _expand_includes(entries: list, section: str, path: Path, positions: dict[Loc, Position]
                     ) -> tuple[list, list[str]]:
    """A string entry names a YAML file holding one spec or a list of specs; splice them in."""
    expanded: list = []
    moved: dict[Loc, Position] = {}
    problems: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            _move(positions, moved, (section, index), (section, len(expanded)))
            expanded.append(entry)
            continue
        include = Path(resolve_path(entry, path.parent))
        if not _is_file(include):
            where = positions.get((section, index), Position(str(path), 0))
            what = "is not a regular file" if include.exists() else "not found"
            problems.append(f"{where}: {section}[{index}]: included file {entry!r} {what} "
                            f"(looked for {include}); fix the path or write the entry inline")
            continue
        data, inner, inner_problems = _read_yaml(include, ())
        problems += inner_problems
        items = data if isinstance(data, list) else [data]
        for inner_index, item in enumerate(items):
            old = (inner_index,) if isinstance(data, list) else ()
            for loc, pos in inner.items():
                if loc[: len(old)] == old:
                    moved[(section, len(expanded)) + loc[len(old):]] = pos
            if isinstance(item, dict):
                _resolve_spec_paths(item, include.parent)
            expanded.append(item)
    for loc in [loc for loc in positions if loc[:1] == (section,) and len(loc) > 1]:
        del positions[loc]
    positions.update(moved)
    return expanded, problems


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system, say: no such file either
        return False


def _move(positions: dict[Loc, Position], moved: dict[Loc, Position], old: Loc, new: Loc) -> None:
    for loc, pos in positions.items():
        if loc[: len(old)] == old:
            moved[new + loc[len(old):]] = pos


def _resolve_paths(data: dict, base_dir: Path) -> None:
    """Relative paths mean relative to the file that wrote them; included specs were resolved
    against their own file already, and an absolute path is left as it is."""
    for section in ("sources", "targets"):
        entries = data.get(section)
        for item in entries if isinstance(entries, list) else []:  # anything else is reported by validation
            if isinstance(item, dict):
                _resolve_spec_paths(item, base_dir)
    if isinstance(data.get("store"), str) and data["store"].strip():  # an empty one is reported, not resolved
        data["store"] = resolve_path(data["store"], base_dir)
    elif "store" not in data:
        data["store"] = resolve_path(".traitlens", base_dir)
    base = data.get("base")
    name = base.get("name") if isinstance(base, dict) else base
    if isinstance(name, str) and (looks_like_path(name) or (base_dir / name).is_dir()):
        resolved = resolve_path(name, base_dir)
        if isinstance(base, dict):
            base["name"] = resolved
        else:
            data["base"] = resolved


def _resolve_spec_paths(item: dict, base_dir: Path) -> None:
    dataset = item.get("dataset")
    if isinstance(dataset, str) and parse_reference(dataset).kind == "file":
        item["dataset"] = resolve_path(dataset, base_dir)


# --- Error messages ------------------------------------------------------------------------


def _describe(exc: ValidationError, data: dict, positions: dict[Loc, Position],
              root: type[BaseModel] = Study) -> list[str]:
    grouped: dict[Loc, list[dict]] = {}
    for error in exc.errors():
        grouped.setdefault(_data_loc(error["loc"], data), []).append(error)
    problems = []
    for loc, errors in grouped.items():
        where = _position(loc, positions)
        problems.append(f"{where}: {_dotted(loc) or '(top level)'}: {_explain(loc, errors, root)}")
    return problems


def _data_loc(loc: tuple, data: Any) -> Loc:
    """pydantic locations include union-member tags; keep only the parts that are in the data."""
    kept: list[str | int] = []
    current = data
    for part in loc:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
        elif isinstance(current, dict) and isinstance(part, str) and part not in kept and "[" not in part:
            kept.append(part)  # a missing or unknown key: the last meaningful part
            break
        else:
            continue
        kept.append(part)
    return tuple(kept)


def _position(loc: Loc, positions: dict[Loc, Position]) -> str:
    for end in range(len(loc), -1, -1):
        if loc[:end] in positions:
            return str(positions[loc[:end]])
    return next(iter(positions.values())).file if positions else "?"


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Shown:
    """A bad value as an error message shows it: its repr, cut to 80 characters (a value can be
    a whole included file)."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        text = repr(self.value)
        return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


def _explain(loc: Loc, errors: list[dict], root: type[BaseModel]) -> str:
    first = errors[0]
    kind, given = first["type"], _Shown(first.get("input"))
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], root)
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f" Did you mean '{guess[0]}'?" if guess else ""
        return f"unknown key.{hint} Allowed keys here: {', '.join(allowed)}."
    if kind == "missing":
        return f"required but missing; add `{loc[-1]}:` here."
    if kind == "string_pattern_mismatch":
        return (f"{given!r} is not a valid name; use lowercase letters, digits, '-', '_' or '.', "
                "starting with a letter or digit.")
    if len(errors) > 1:  # one error per union member: say what each member would accept
        accepted = "; or ".join(e["msg"].removeprefix("Input should be ") for e in errors)
        return f"got {given!r}; expected {accepted}."
    if kind == "literal_error":
        expected = first["ctx"]["expected"]
        options = [o.strip(" '") for o in expected.replace(" or ", ", ").split(",")]
        guess = difflib.get_close_matches(str(given.value), options, n=1, cutoff=0.6)
        hint = f" Did you mean '{guess[0]}'?" if guess else ""
        return f"got {given!r}; use one of {expected}.{hint}"
    message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if kind == "value_error" or isinstance(given.value, (dict, list)):
        return message + ("" if message.endswith(".") else ".")
    return f"{message}; got {given!r}."


def _allowed_keys(loc: Loc, root: type[BaseModel]) -> list[str]:
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue  # list element: _unwrap already stepped into the item type
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = _unwrap(model.model_fields[part].annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """The model class inside Optional[...], list[...] or a union, if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            inner = _unwrap(arg)
            if inner is not None:
                return inner
    return None
