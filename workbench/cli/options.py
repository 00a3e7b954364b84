"""Options shared by the `workbench` commands, each checked while the command line is parsed, before any work.

Why one module: the same options (`--episodes`, `--seed`, `--split`, `--env`, `--json`, `--store`) appear in a dozen
commands, and the same mistakes reach all of them (issue 13): `--episodes 1000000000000` ran out of memory,
`--seed -1` and `--seed 2**64` were tracebacks, `--episodes 0` and `--coef abc` printed Click's five-line usage box.
Here every number goes through one Click callback that parses it and range-checks it with `workbench.validate`
(`check_int`, `check_float`), so a bad value is one `error: ...` line naming the option, the range and the nearest
valid value, raised before the command body runs (nothing loaded, nothing written). `--help` shows each range.

- numbers: `Int(...)` / `Float(...)` build a `typer.Option`; `Episodes(...)`, `Seed(...)` fix the shared ranges
  (1..1_000_000 and 0..2**32-1); `EpisodesOpt`, `SeedOpt` are the ready-made annotations;
- subjects: `SubjectArg`, `EnvOpt`, `SplitOpt`; output: `JsonOpt` (strict JSON via `dump`);
- destinations, checked before work and writing nothing: `output_file`, `new_folder`, `store_path` (the results
  store of `--store` / `$WORKBENCH_STORE`); `made_parents` creates an output's folders and removes them again if the
  work fails; `record` writes result rows once the work has succeeded.

Heavy modules (torch, duckdb, pandas) are imported inside the helpers so `workbench --help` stays fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from workbench.errors import WorkbenchError
from workbench.validate import MAX_EPISODES, MAX_SEED, check_float, check_int

__all__ = [
    "EnvOpt",
    "Episodes",
    "EpisodesOpt",
    "Float",
    "Int",
    "JsonOpt",
    "Seed",
    "SeedOpt",
    "SplitOpt",
    "StoreOpt",
    "SubjectArg",
    "dump",
    "made_parents",
    "new_folder",
    "output_file",
    "record",
    "store_path",
]


# --------------------------------------------------------------------------------------------------- numbers
def _raw(value: Any) -> Any:
    """Typer `parser` that keeps the text as typed: the callback below parses it, knowing the option's name."""
    return value


def _option_name(param: Any) -> str:
    opts = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
    return opts[0] if opts else f"--{str(getattr(param, 'name', 'value')).replace('_', '-')}"


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def range_text(lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False) -> str:
    """`1..1000000`, `>= 1`, `(0, 1)`: how `--help` and the errors show a range ("" when unbounded)."""
    if lo is not None and hi is not None:
        if lo_open or hi_open:
            return f"{'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
        return f"{_num(lo)}..{_num(hi)}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return ""


def _checker(kind: type, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool):
    """A Click callback that parses and range-checks every value of its option (lists element by element)."""
    what = "an integer" if kind is int else "a finite number"

    def one(name: str, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text, 10) if kind is int else float(text)
            except ValueError:
                rng = range_text(lo, hi, lo_open=lo_open, hi_open=hi_open)
                raise WorkbenchError(f"{name} must be {what}{f' ({rng})' if rng else ''}, got {text!r}") from None
        if kind is int:
            return check_int(name, value, lo, hi)  # type: ignore[arg-type]
        return check_float(name, value, lo, hi, lo_open=lo_open, hi_open=hi_open)

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is None or ctx.resilient_parsing:
            return value
        name = _option_name(param)
        if isinstance(value, list | tuple):
            return [one(name, v) for v in value]
        return one(name, value)

    return callback


def Int(*decls: str, help: str, lo: int | None = None, hi: int | None = None) -> Any:
    """A `typer.Option` for an integer in `lo..hi` (either bound may be None), checked as it is parsed; the range is
    appended to `help`. Use as `Annotated[int, Int(help=..., lo=1)]` (or `list[int]`, `int | None`)."""
    rng = range_text(lo, hi)
    return typer.Option(
        *decls, parser=_raw, callback=_checker(int, lo, hi, False, False), help=f"{help} ({rng})" if rng else help
    )


def Float(
    *decls: str,
    help: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Any:
    """A `typer.Option` for a finite number within the bounds (`lo_open`: strictly above `lo`): NaN, infinities
    and text are refused as they are parsed; the range is appended to `help`."""
    rng = range_text(lo, hi, lo_open=lo_open, hi_open=hi_open)
    return typer.Option(
        *decls,
        parser=_raw,
        callback=_checker(float, lo, hi, lo_open, hi_open),
        help=f"{help} ({rng + ', ' if rng else ''}finite)",
    )


def Episodes(*decls: str, help: str = "number of levels (one episode each)", lo: int = 1) -> Any:
    """An episode / level / prompt count: `lo`..1_000_000 (`workbench.validate.MAX_EPISODES`)."""
    return Int(*decls, help=help, lo=lo, hi=MAX_EPISODES)


def Seed(*decls: str, help: str = "seed: same seed, same levels and same sampled actions") -> Any:
    """A seed: 0..2**32-1 (`workbench.validate.MAX_SEED`)."""
    return Int(*decls, help=help, lo=0, hi=MAX_SEED)


EpisodesOpt = Annotated[int, Episodes()]
SeedOpt = Annotated[int, Seed()]

# --------------------------------------------------------------------------------------------------- subjects
SubjectArg = Annotated[
    str,
    typer.Argument(
        help="a shipped name (maze-cheese-corner), an artifact folder, a published .pth with --env, a name "
        "registered with workbench.register_subject, or a factory `package.module:function`"
    ),
]
EnvOpt = Annotated[
    str | None,
    typer.Option(
        help="the env kind of a bare checkpoint file: procgen-maze or procgen-coinrun (artifact folders, shipped "
        "names and registered subjects need none; `native` means none)"
    ),
]
SplitOpt = Annotated[
    str, typer.Option(help="a split of the subject's world: train (the goals coincide) or ood (they part)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object (strict: NaN is null, with a reason)")]
StoreOpt = Annotated[
    Path | None,
    typer.Option(help="results store file (default $WORKBENCH_STORE, else runs/results.duckdb); checked before work"),
]


def env_kind(env: str | None) -> str | None:
    """`--env` as `load_subject` takes it (`native` and no value both mean: the reference says its own kind)."""
    return None if env in (None, "native") else env


# --------------------------------------------------------------------------------------------------- output
def dump(obj: Any) -> None:
    """Print `obj` as one line of strict JSON: NaN and infinities become null, with `null_reasons` beside them."""
    from workbench.validate import strict_json

    typer.echo(strict_json(obj))


def output_file(path: Path, *, name: str, suffixes: Sequence[str] | None = None) -> Path:
    """A file the command will write, checked before work (not a folder, no parent that is a file, writable, one
    of `suffixes`); writes nothing."""
    from workbench.validate import check_output_file

    return check_output_file(path, name=name, suffixes=suffixes)


def new_folder(path: Path, *, name: str) -> Path:
    """A folder the command will create, checked before work: it must not exist yet (nothing is overwritten), no
    parent may be a file, and the nearest existing parent must be writable. Writes nothing."""
    from workbench.validate import check_output_dir

    path = Path(path).expanduser()
    if path.exists() or path.is_symlink():
        raise WorkbenchError(f"{name} {path} already exists; choose a new folder (nothing is overwritten)")
    return check_output_dir(path, name=name)


@contextlib.contextmanager
def made_parents(path: Path) -> Iterator[None]:
    """Create the missing folders above `path` for the work inside the block; if the work fails, remove the ones
    created here again (when still empty), so a failed command leaves the disk as it was."""
    path = Path(path)
    missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WorkbenchError(f"cannot create {path.parent} ({err.strerror or err})") from None
    try:
        yield
    except BaseException:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


# --------------------------------------------------------------------------------------------------- results store
def store_path(store: Path | None) -> Path:
    """The results store a measuring command writes to (`--store`, else `$WORKBENCH_STORE`, else
    `runs/results.duckdb`), checked before any work with `workbench.store.check_store_path`; writes nothing."""
    from workbench.store import check_store_path, default_store_path

    return check_store_path(store if store is not None else default_store_path())


def record(rows: list[dict], path: Path) -> int:
    """Append `rows` to the store at `path` (one segment file; safe beside other writers); returns the count."""
    if not rows:
        return 0
    from workbench.store import ResultStore

    with ResultStore(path) as db:
        return db.add(rows)
