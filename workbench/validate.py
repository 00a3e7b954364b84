"""Validators for user input, shared by the CLI, recipes, batteries and the store: check first, then work.

Why one module: the same mistakes arrive through every door -- a seed of -1, `--episodes 0`, an output path that is a
folder, a recipe saved as UTF-16, a threshold of NaN. Each validator here answers with one `WorkbenchError` line that
names the value, the problem and the nearest valid choice, and none of them writes anything, so a caller can validate
every option before it loads a model or touches the disk (and the CLI can exit 2 with nothing written).

- numbers: `check_int`, `check_float`, `check_episodes` (1..1_000_000), `check_seed` (0..2**32-1);
- paths: `check_output_file` (not a folder, parent not a file, writable, a supported extension),
  `check_output_dir`, `check_input_file`;
- files: `read_text` (UTF-8 only; binary, UTF-16/32 and other encodings are named as such);
- JSON: `strict_jsonable` / `strict_json` turn NaN and infinities into `null` and record why in a `null_reasons`
  map next to them, so strict parsers (JavaScript, jq, Go) accept every file and report the workbench writes.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError, closest

__all__ = [
    "MAX_EPISODES",
    "MAX_SEED",
    "check_episodes",
    "check_float",
    "check_input_file",
    "check_int",
    "check_output_dir",
    "check_output_file",
    "check_seed",
    "decode_text",
    "read_text",
    "strict_json",
    "strict_jsonable",
]

MAX_EPISODES = 1_000_000
"""Upper bound for episode / level / prompt counts: above it an evaluation would not fit in memory or in a day."""
MAX_SEED = 2**32 - 1
"""Seeds are 32-bit unsigned (numpy's SeedSequence entropy and torch.manual_seed both accept 0..2**32-1)."""


# --------------------------------------------------------------------------------------------------- numbers


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None, *, why: str = "") -> int:
    """`value` as an int in `lo..hi` (either bound may be None); else one line naming the range and nearest value.

    Floats that are whole numbers (3.0) are accepted; strings are not (parse them first)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value):
        raise WorkbenchError(f"{name} must be an integer{_range_text(lo, hi)}, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        nearest = lo if lo is not None and value < lo else hi
        tail = f" ({why})" if why else ""
        where = (
            f"in {_range_text(lo, hi, bare=True)}" if lo is not None and hi is not None else _range_text(lo, hi, True)
        )
        raise WorkbenchError(f"{name} must be {where}, got {value}; nearest valid: {nearest}{tail}")
    return value


def _range_text(
    lo: float | None, hi: float | None, bare: bool = False, lo_open: bool = False, hi_open: bool = False
) -> str:
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            text = f"{lo:g}..{hi:g}" if isinstance(lo, float) or isinstance(hi, float) else f"{lo}..{hi}"
        else:
            text = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"{'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        text = f"{'<' if hi_open else '<='} {hi:g}"
    else:
        return ""
    return text if bare else f" in {text}" if (lo is not None and hi is not None) else f" {text}"


def check_float(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """`value` as a finite float within the bounds (`lo_open`: strictly above `lo`); NaN and infinities refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise WorkbenchError(
            f"{name} must be a number{_range_text(lo, hi, lo_open=lo_open, hi_open=hi_open)}, got {value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise WorkbenchError(f"{name} must be a finite number, got {value}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        rng = _range_text(lo, hi, bare=True, lo_open=lo_open, hi_open=hi_open)
        raise WorkbenchError(f"{name} must be {'in ' if lo is not None and hi is not None else ''}{rng}, got {value:g}")
    return value


def check_episodes(value: Any, name: str = "episodes", lo: int = 1, hi: int = MAX_EPISODES) -> int:
    """An episode / level / prompt count in 1..1_000_000 (`lo` may be raised, e.g. 2 for a probe's fit set)."""
    return check_int(name, value, lo, hi)


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed in 0..2**32-1."""
    return check_int(name, value, 0, MAX_SEED)


# --------------------------------------------------------------------------------------------------- paths


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_parent(path: Path, name: str) -> None:
    """The folder that would hold `path`: no ancestor may be a file, and the nearest existing one must be writable."""
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() and not parent.is_dir():
            raise WorkbenchError(f"{name} {path}: {parent} is a file, not a folder; choose a path outside it")
        if parent.exists():
            break
    anchor = _nearest_existing(path.parent)
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise WorkbenchError(f"{name} {path}: cannot write in {anchor} (permission denied); choose a writable folder")


def check_output_file(
    path: str | Path,
    *,
    name: str = "output",
    suffixes: Iterable[str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Validate a file the caller is about to write, writing nothing: not an existing folder, no ancestor that is a
    file, a writable folder, and (if `suffixes` is given, e.g. (".png", ".svg")) one of those extensions -- a missing
    or wrong extension names the nearest valid file name. Returns the path (user-expanded)."""
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        raise WorkbenchError(f"{name}: empty path; give a file name")
    allowed = tuple(s.lower() for s in suffixes) if suffixes is not None else None
    if path.is_dir():
        example = f"{path.name or 'out'}{allowed[0]}" if allowed else "out"
        raise WorkbenchError(
            f"{name} {path} is an existing folder, not a file; give a file path such as {path / example}"
        )
    if allowed is not None and path.suffix.lower() not in allowed:
        valid = ", ".join(allowed)
        if not path.suffix:
            raise WorkbenchError(f"{name} {path} has no extension; use one of {valid}, e.g. {path}{allowed[0]}")
        near = closest(path.suffix.lower(), allowed, n=1) or [allowed[0]]
        raise WorkbenchError(
            f"{name} {path}: unsupported extension {path.suffix!r}; "
            f"use one of {valid}, e.g. {path.with_suffix(near[0])}"
        )
    if not overwrite and path.exists():
        raise WorkbenchError(f"{name} {path} already exists; remove it or choose another name")
    _check_parent(path, name)
    if path.exists() and not os.access(path, os.W_OK):
        raise WorkbenchError(f"{name} {path}: file is not writable (permission denied)")
    return path


def check_output_dir(path: str | Path, *, name: str = "output folder") -> Path:
    """Validate a folder the caller is about to create or write into: not an existing file, no ancestor that is a
    file, writable. Writes nothing; returns the path (user-expanded)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise WorkbenchError(
            f"{name} {path} is an existing file, not a folder; "
            f"choose a folder path such as {path.parent / (path.stem + '-out')}"
        )
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise WorkbenchError(f"{name} {path}: cannot write in it (permission denied)")
        return path
    _check_parent(path, name)
    return path


def check_grid_cells(blocked: Any, cells: Any, which: Any, *, what: str, unit: str, blocked_phrase: str) -> None:
    """Refuse cells outside an (N, H, W) grid or on a blocked tile, naming the first bad one: `"{what} cell (r, c) of
    {unit} i is outside the HxW world"` or `"... is {blocked_phrase}; choose a free cell"`. Vectorised (one check per
    batch); a handful of cells (one edit) is checked with scalars, which is cheaper."""
    import numpy as np

    h, w = blocked.shape[-2:]
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    which = np.asarray(which, dtype=np.int64).reshape(-1)
    if len(cells) <= 4:
        pairs = zip(cells[:, 0], cells[:, 1], which, strict=True)
        if not any(not (0 <= r < h and 0 <= c < w) or blocked[i, r, c] for r, c, i in pairs):
            return
    rows, cols = cells[:, 0], cells[:, 1]
    outside = (rows < 0) | (rows >= h) | (cols < 0) | (cols >= w)
    bad = np.flatnonzero(outside | blocked[which, np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)])
    if bad.size == 0:
        return
    k = bad[0]
    r, c, i = int(rows[k]), int(cols[k]), int(which[k])
    if outside[k]:
        raise WorkbenchError(f"{what} cell ({r}, {c}) of {unit} {i} is outside the {h}x{w} world")
    raise WorkbenchError(f"{what} cell ({r}, {c}) of {unit} {i} is {blocked_phrase}; choose a free cell")


def check_input_file(path: str | Path, *, name: str = "file", suffixes: Iterable[str] | None = None) -> Path:
    """An existing, readable regular file (with one of `suffixes` if given)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WorkbenchError(f"{name} {path} does not exist")
    if path.is_dir():
        raise WorkbenchError(f"{name} {path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise WorkbenchError(f"{name} {path} is not readable (permission denied)")
    if suffixes is not None:
        allowed = tuple(s.lower() for s in suffixes)
        if path.suffix.lower() not in allowed:
            raise WorkbenchError(
                f"{name} {path}: unsupported extension {path.suffix or '(none)'!r}; expected {', '.join(allowed)}"
            )
    return path


# --------------------------------------------------------------------------------------------------- text files

_BOMS = (
    (b"\xef\xbb\xbf", None),  # UTF-8 BOM: accepted (stripped)
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def decode_text(data: bytes, where: str | Path) -> str:
    """`data` as UTF-8 text; binary data, UTF-16/32 and other encodings are one line naming `where` and the fix."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            if encoding is None:
                data = data[len(bom) :]
                break
            raise WorkbenchError(f"{where}: file is {encoding}-encoded; save it as UTF-8")
    if b"\x00" in data[:8192]:
        # UTF-16 without a BOM has a NUL in every other byte of ASCII text
        head = data[:200]
        if len(head) >= 4 and (head[1::2].count(0) > len(head) // 4 or head[0::2].count(0) > len(head) // 4):
            raise WorkbenchError(f"{where}: file looks UTF-16-encoded (NUL bytes between characters); save it as UTF-8")
        raise WorkbenchError(f"{where}: binary file (NUL bytes), not a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise WorkbenchError(
            f"{where}: not valid UTF-8 (byte 0x{data[err.start]:02x} on line {line}); save the file as UTF-8"
        ) from None


def read_text(path: str | Path, what: str = "file") -> str:
    """Read a UTF-8 text file; missing, a folder, unreadable, binary or wrongly encoded -> one line naming it."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise WorkbenchError(f"{what} {str(path)!r} is a folder, not a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WorkbenchError(f"{what} {path}: cannot read ({err.strerror or err})") from None
    return decode_text(data, path)


# --------------------------------------------------------------------------------------------------- strict JSON

NULL_REASONS = "null_reasons"
"""Key added to a JSON object whose values include NaN or infinities replaced by null: member -> why it is null."""


def _reason(x: float) -> str:
    if math.isnan(x):
        return "not a number (NaN): undefined for this data, e.g. no samples or no interval"
    return "+infinity" if x > 0 else "-infinity"


def strict_jsonable(obj: Any, reasons: Mapping[str, str] | None = None) -> Any:
    """A copy of `obj` that `json.dumps(..., allow_nan=False)` accepts: NaN / +-inf become None and every dict that
    held one gains `null_reasons: {member: why}` (list elements are named `member[i]`; `reasons` maps a member name
    to a better explanation, e.g. {"ci_low": "no interval for a point estimate"}). numpy / torch scalars and arrays
    become Python numbers and lists; tuples become lists; Paths and other objects become strings."""
    reasons = dict(reasons or {})

    def scalar(v: Any) -> Any:
        if hasattr(v, "detach") and hasattr(v, "cpu"):  # torch tensor
            v = v.detach().cpu().numpy()
        if hasattr(v, "tolist") and not isinstance(v, str | bytes):
            v = v.tolist()
        return v

    def walk(v: Any, member: str, notes: dict[str, str] | None) -> Any:
        v = scalar(v)
        if isinstance(v, bool) or v is None or isinstance(v, str | int):
            return v
        if isinstance(v, float):
            if math.isfinite(v):
                return v
            if notes is not None:
                notes[member] = reasons.get(member.split("[")[0], _reason(v))
            return None
        if isinstance(v, numbers.Real):
            return walk(float(v), member, notes)
        if isinstance(v, Mapping):
            own: dict[str, str] = {}
            out = {str(k): walk(x, str(k), own) for k, x in v.items()}
            if own:
                merged = dict(out.get(NULL_REASONS) or {}) if isinstance(out.get(NULL_REASONS), dict) else {}
                out[NULL_REASONS] = {**merged, **own}
            return out
        if isinstance(v, list | tuple | set | frozenset):
            items = list(v) if not isinstance(v, set | frozenset) else sorted(v, key=repr)
            return [walk(x, f"{member}[{i}]", notes) for i, x in enumerate(items)]
        if isinstance(v, Path):
            return v.as_posix()
        if hasattr(v, "to_json") and callable(v.to_json):  # typed results (CheckResult, Estimate, ...)
            data = v.to_json()
            return walk(json.loads(data) if isinstance(data, str) else data, member, notes)
        return str(v)

    return walk(obj, "", None)


def strict_json(obj: Any, *, indent: int | None = None, reasons: Mapping[str, str] | None = None, **kwargs: Any) -> str:
    """`json.dumps` of `strict_jsonable(obj)` with `allow_nan=False`: never writes a bare NaN or Infinity."""
    return json.dumps(strict_jsonable(obj, reasons), indent=indent, allow_nan=False, **kwargs)
