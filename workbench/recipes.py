"""Recipes: one TOML file per model organism, read into typed config dataclasses with strict validation.

Why strict: a misspelt hyperparameter that is silently ignored trains a different organism than the card claims.
Every unknown key or wrong type is a one-line `WorkbenchError` naming the file, the `[section].key` and the nearest
valid key, before anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError, closest


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


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file; a missing file or a syntax error becomes a one-line WorkbenchError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"recipe file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise WorkbenchError(f"{path}: invalid TOML: {err}") from None


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
