"""Recipes: one TOML file per model organism, read into typed config dataclasses with strict validation.

Why strict: a misspelt hyperparameter that is silently ignored trains a different organism than the card claims.
Every unknown key, wrong type, non-finite number or out-of-range value is a one-line `WorkbenchError` naming the
file, the `[section]` and the key (and the nearest valid key), before anything is trained or written. Files are read
as UTF-8 only: a binary or UTF-16 file is named as such instead of failing inside the TOML parser.

`recipe_hash` and `recipe_diff` let a resumable trainer record which recipe a checkpoint belongs to and say, in one
line, which `[section].key`s differ when it is resumed with another one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError, closest
from workbench.validate import read_text


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool or annotation is str:
        return isinstance(value, annotation)
    if origin is tuple:
        inner = typing.get_args(annotation)[0]
        return isinstance(value, list | tuple) and all(_type_ok(v, inner) for v in value)
    return True


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return f"list of {typing.get_args(annotation)[0].__name__}"
    return getattr(annotation, "__name__", str(annotation))


def from_table(cls: type, table: dict, where: str) -> Any:
    """Build dataclass `cls` from a TOML table; `where` (e.g. "agents/x.toml [ppo]") prefixes every error."""
    if not isinstance(table, dict):
        raise WorkbenchError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for key, value in table.items():
        if key not in fields:
            near = closest(key, fields)
            hint = f"; did you mean: {', '.join(near)}?" if near else f"; valid keys: {', '.join(sorted(fields))}"
            raise WorkbenchError(f"{where}: unknown key {key!r}{hint}")
        if not _type_ok(value, hints[key]):
            raise WorkbenchError(f"{where}: key {key!r} must be {_type_name(hints[key])}, got {value!r}")
        if not _finite(value):
            raise WorkbenchError(f"{where}: key {key!r} must be a finite number, got {value!r}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in table]
    if missing:
        raise WorkbenchError(f"{where}: missing key {missing[0]!r}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})
    except WorkbenchError as err:
        raise WorkbenchError(f"{where}: {err}") from None
    except (TypeError, ValueError, OverflowError) as err:  # a constructor's own check, phrased as one line
        raise WorkbenchError(f"{where}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file; a missing file or a syntax error becomes a one-line WorkbenchError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise WorkbenchError(f"recipe file {str(path)!r} is a folder, not a TOML file")
    if not path.is_file():
        raise WorkbenchError(f"recipe file {str(path)!r} does not exist")
    text = read_text(path, "recipe file")  # binary / UTF-16 / not UTF-8 -> one line naming the file
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise WorkbenchError(f"{path}: invalid TOML: {str(err).splitlines()[0]}") from None


def check_sections(data: dict, allowed: dict[str, bool], where: str) -> None:
    """`allowed` maps section name -> required. Unknown sections get the nearest valid one."""
    for key in data:
        if key not in allowed:
            near = closest(key, allowed)
            hint = f"; did you mean: {', '.join(near)}?" if near else ""
            raise WorkbenchError(f"{where}: unknown section [{key}]{hint}")
    for key, required in allowed.items():
        if required and key not in data:
            raise WorkbenchError(f"{where}: missing section [{key}]")


@dataclasses.dataclass(frozen=True)
class ArtifactSection:
    """A recipe's `[artifact]` table: the artifact's folder name and a one-line description (every trainer)."""

    name: str
    description: str = ""


def recipe_hash(data: dict) -> str:
    """sha256 of a recipe's tables in canonical JSON (key order and TOML formatting do not matter)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = f"[{key}]" if not prefix else f"{prefix}.{key}"
            if isinstance(value, dict):
                out |= _flatten(value, name)
            else:
                out[name] = value
        return out
    return {prefix: data}


def recipe_diff(old: dict, new: dict) -> list[str]:
    """`[section].key` entries that differ between two recipes' tables, as `"[ppo].learning_rate: 0.0002 -> 0.001"`
    (a key only in one of them shows `(absent)` on the other side), sorted."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, _ABSENT) != b.get(key, _ABSENT):
            out.append(f"{key}: {_show(a.get(key, _ABSENT))} -> {_show(b.get(key, _ABSENT))}")
    return out


_ABSENT = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
