"""Labelled activation datasets: activations at named hooks for N states, aligned row by row with ground-truth labels.

Why a dataset type: probes, SAEs, clustering and steering analyses all start from the same thing -- "the activations
at these hooks, for these states, with what was true in the world at each state". Collecting that once, storing it in
a plain format any tool can read, and loading it back cheaply makes every later analysis reproducible from a folder.

On disk a dataset is a folder:

    meta.json                 format + version, hooks, per-row shapes, storage dtype, n, shard list (file, rows),
                              label columns, source description, seed, created
    labels.parquet            the N-row labels table
    shard-00000.safetensors   one tensor per hook (key = hook name) for a contiguous block of rows, in row order
    shard-00001.safetensors   ...

`ShardWriter` writes it streaming, with bounded memory: a shard is flushed whenever `shard_size` rows accumulated.
Everything goes to a temporary sibling folder that is renamed into place at the end (`workbench.artifacts.writing`),
so an error never leaves a half-written dataset and never clobbers an existing one. `ActivationDataset.load` reads
only `meta.json`, the labels and each shard's header (so a missing, corrupt or wrongly sized shard is reported up
front, naming the file); a hook's shards are read and concatenated on first access to that hook.

Collectors fill datasets: `workbench.rl.collect` from RL agents (labels from the environment's true state),
`workbench.data.prompts` from language models; `collect_arrays` wraps activations you already have.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from workbench import artifacts
from workbench.errors import WorkbenchError, unknown
from workbench.hooks import hook_names

FORMAT = "workbench-activations"
FORMAT_VERSION = 1
META, LABELS = "meta.json", "labels.parquet"
DEFAULT_SHARD_SIZE = 4096
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

LabelsLike = pd.DataFrame | Mapping[str, Any]


def shard_name(index: int) -> str:
    """File name of shard `index`: `shard-00000.safetensors`, ..."""
    return f"shard-{index:05d}.safetensors"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _source(source: str | Mapping | None, default: str) -> dict:
    """A JSON-able source description dict; a plain string becomes `{"description": string}`."""
    if source is None:
        return {"kind": default, "description": default}
    if isinstance(source, str):
        return {"description": source}
    return dict(source)


def _as_frame(labels: LabelsLike | None, n: int) -> pd.DataFrame:
    """Labels as a DataFrame with a fresh 0..len-1 index (None: no columns, n rows)."""
    if labels is None:
        return pd.DataFrame(index=pd.RangeIndex(n))
    if isinstance(labels, pd.DataFrame):
        return labels.reset_index(drop=True)
    if isinstance(labels, Mapping):
        cols = {str(k): v.detach().cpu().numpy() if isinstance(v, Tensor) else v for k, v in labels.items()}
        if not cols:
            return pd.DataFrame(index=pd.RangeIndex(n))
        try:
            return pd.DataFrame(cols)
        except ValueError as err:
            raise WorkbenchError(f"labels could not be made into a table: {err}") from None
    raise WorkbenchError(f"labels must be a pandas DataFrame or a dict of columns, got {type(labels).__name__}")


def _check_hook_list(hooks: str | Sequence[str]) -> list[str]:
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hooks:
        raise WorkbenchError("an activation dataset needs at least one hook")
    for h in hooks:
        if not isinstance(h, str) or not h:
            raise WorkbenchError(f"hook names must be non-empty strings, got {h!r}")
    dupes = sorted({h for h in hooks if hooks.count(h) > 1})
    if dupes:
        raise WorkbenchError(f"hook {dupes[0]!r} is listed twice")
    return hooks


def _row_index(index: Any, n: int) -> np.ndarray:
    """Integer row positions from a boolean mask, integer indices, an int or a slice (numpy semantics, checked)."""
    if isinstance(index, slice):
        return np.arange(n)[index]
    if isinstance(index, (bool, np.bool_)):
        raise WorkbenchError("select takes a boolean mask of length N, integer row indices or a slice, not a bool")
    if isinstance(index, (int, np.integer)):
        index = [int(index)]
    if isinstance(index, Tensor):
        arr = index.detach().cpu().numpy()
    elif isinstance(index, (pd.Series, pd.Index)):
        arr = index.to_numpy()
    else:
        arr = np.asarray(index)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise WorkbenchError(f"boolean mask has shape {arr.shape}; the dataset has {n} rows, so need ({n},)")
        return np.flatnonzero(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise WorkbenchError(
            f"select takes a boolean mask of length N, 1-D integer row indices or a slice; got {arr.dtype} {arr.shape}"
        )
    arr = arr.astype(np.int64)
    bad = arr[(arr < -n) | (arr >= n)]
    if bad.size:
        raise WorkbenchError(f"row index {int(bad[0])} is out of range for a dataset of {n} rows")
    return np.where(arr < 0, arr + n, arr)


# ------------------------------------------------------------------------------------------------------- shard files
def _check_shard(path: Path, rows: int, hooks: list[str], shapes: dict[str, tuple[int, ...]]) -> None:
    """Validate a shard from its header alone: present, readable, one tensor per hook of shape (rows, *shape)."""
    if not path.is_file():
        raise WorkbenchError(f"{path}: shard missing; the dataset folder is incomplete (re-collect or re-save it)")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            for h in hooks:
                if h not in keys:
                    raise WorkbenchError(f"{path}: shard has no tensor for hook {h!r}")
                shape = tuple(f.get_slice(h).get_shape())
                if not shape or shape[0] != rows:
                    got = shape[0] if shape else 0
                    raise WorkbenchError(f"{path}: hook {h!r} has {got} rows but {META} says {rows}")
                if shape[1:] != shapes[h]:
                    raise WorkbenchError(f"{path}: hook {h!r} rows have shape {shape[1:]} but {META} says {shapes[h]}")
    except WorkbenchError:
        raise
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise WorkbenchError(f"{path}: unreadable shard ({err})") from None


def _read_shard(path: Path, rows: int, hook: str) -> Tensor:
    try:
        with safe_open(str(path), framework="pt") as f:
            t = f.get_tensor(hook)
    except Exception as err:
        raise WorkbenchError(f"{path}: unreadable shard ({err})") from None
    if t.shape[0] != rows:
        raise WorkbenchError(f"{path}: hook {hook!r} has {t.shape[0]} rows but {META} says {rows}")
    return t


# ----------------------------------------------------------------------------------------------------------- dataset
class ActivationDataset:
    """Activations for one or more hooks plus a labels table, N rows aligned.

    `ds[hook]` is an (N, ...) float32 tensor, `ds.labels` an N-row DataFrame, `ds.label(name)` one column as numpy,
    `ds.select(mask_or_index)` a row subset (in memory), `ds.save(folder)` / `ActivationDataset.load(folder)` the
    on-disk format described in the module docstring. A loaded dataset reads a hook's shards on first access.
    """

    def __init__(
        self, acts: Mapping[str, Tensor], labels: LabelsLike | None = None, meta: Mapping | None = None
    ) -> None:
        hooks = _check_hook_list(list(acts))
        data: dict[str, Tensor] = {}
        n = 0
        for i, h in enumerate(hooks):
            t = torch.as_tensor(acts[h]).detach()
            if t.ndim == 0:
                raise WorkbenchError(f"activations for {h!r} are a scalar; need a leading row dimension (N, ...)")
            if i == 0:
                n = int(t.shape[0])
            elif t.shape[0] != n:
                raise WorkbenchError(f"hook {h!r} has {t.shape[0]} rows but hook {hooks[0]!r} has {n}")
            data[h] = t.to(device="cpu", dtype=torch.float32)
        frame = _as_frame(labels, n)
        if len(frame) != n:
            raise WorkbenchError(f"{n} activations but {len(frame)} labels")
        meta = {"source": _source(None, "arrays"), "seed": None, "created": _now(), **dict(meta or {})}
        self._setup(hooks, {h: tuple(t.shape[1:]) for h, t in data.items()}, n, frame, meta, data, [], None)

    def _setup(
        self,
        hooks: list[str],
        shapes: dict[str, tuple[int, ...]],
        n: int,
        labels: pd.DataFrame,
        meta: dict,
        data: dict[str, Tensor],
        shards: list[tuple[Path, int]],
        path: Path | None,
    ) -> None:
        self._hooks, self._shapes, self._n, self._labels = hooks, shapes, n, labels
        self._meta, self._data, self._shards, self._path = meta, data, shards, path

    # -- access ----------------------------------------------------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self._hooks)

    @property
    def labels(self) -> pd.DataFrame:
        """The N-row labels table (row i labels activation row i)."""
        return self._labels

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-row activation shape of each hook (known without reading any shard)."""
        return dict(self._shapes)

    @property
    def meta(self) -> dict:
        """Source description, seed, creation time (and, when loaded, the stored meta.json fields)."""
        return dict(self._meta)

    @property
    def path(self) -> Path | None:
        """The folder this dataset was loaded from, or None for an in-memory dataset."""
        return self._path

    def __len__(self) -> int:
        return self._n

    def __contains__(self, hook: object) -> bool:
        return hook in self._shapes

    def __getitem__(self, hook: str) -> Tensor:
        if not isinstance(hook, str):
            raise WorkbenchError(f"ds[hook] takes a hook name, got {type(hook).__name__}; select rows with ds.select()")
        if hook not in self._shapes:
            raise unknown("hook", hook, self._hooks)
        t = self._data.get(hook)
        if t is None:
            t = self._load_hook(hook)
            self._data[hook] = t
        return t

    def _load_hook(self, hook: str) -> Tensor:
        parts = [_read_shard(path, rows, hook) for path, rows in self._shards]
        if not parts:
            return torch.zeros((0, *self._shapes[hook]), dtype=torch.float32)
        return torch.cat(parts).to(torch.float32)

    def label(self, name: str) -> np.ndarray:
        """One label column as a numpy array (N,)."""
        if name not in self._labels.columns:
            raise unknown("label", name, [str(c) for c in self._labels.columns])
        return self._labels[name].to_numpy()

    def select(self, mask_or_index: Any) -> ActivationDataset:
        """The rows picked by a boolean mask (N,), integer row indices, an int or a slice, as an in-memory dataset."""
        idx = _row_index(mask_or_index, self._n)
        rows = torch.as_tensor(idx, dtype=torch.long)
        acts = {h: self[h][rows] for h in self._hooks}
        labels = self._labels.iloc[idx].reset_index(drop=True)
        meta = {k: self._meta[k] for k in ("source", "seed", "created") if k in self._meta}
        return ActivationDataset(acts, labels, meta)

    # -- disk ------------------------------------------------------------------------------------------------------
    def _blocks(self, block: int) -> Iterator[tuple[dict[str, Tensor], pd.DataFrame]]:
        """Row blocks for writing; a lazily loaded dataset is streamed shard by shard (bounded memory)."""
        if self._n == 0:
            yield {h: self[h] for h in self._hooks}, self._labels
            return
        if self._shards and any(h not in self._data for h in self._hooks):
            start = 0
            for path, rows in self._shards:
                acts = {
                    h: self._data[h][start : start + rows] if h in self._data else _read_shard(path, rows, h)
                    for h in self._hooks
                }
                yield acts, self._labels.iloc[start : start + rows]
                start += rows
            return
        for start in range(0, self._n, block):
            yield {h: self[h][start : start + block] for h in self._hooks}, self._labels.iloc[start : start + block]

    def save(self, path: str | Path, shard_size: int = DEFAULT_SHARD_SIZE) -> Path:
        """Write the dataset folder at `path` (atomically, replacing an existing dataset there); returns the path."""
        path = Path(path)
        if self._path is not None and path.resolve() == self._path.resolve():
            for h in self._hooks:  # the old shards disappear when the new folder is renamed into place
                self[h]
        writer = ShardWriter(
            path,
            self._hooks,
            shard_size,
            source=self._meta.get("source"),
            seed=self._meta.get("seed"),
            dtype=self._meta.get("dtype", "float32"),
            created=self._meta.get("created"),
        )
        with writer:
            for acts, labels in self._blocks(shard_size):
                writer.add(acts, labels)
            writer.close()
        return path

    @classmethod
    def load(cls, path: str | Path) -> ActivationDataset:
        """Open a dataset folder: validates meta.json, labels and every shard's header now; reads data lazily."""
        folder = Path(path)
        meta_path = folder / META
        if not folder.is_dir():
            raise WorkbenchError(f"{folder}: no such activation dataset folder")
        if not meta_path.is_file():
            raise WorkbenchError(f"{folder} is not an activation dataset (no {META})")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise WorkbenchError(f"{meta_path}: unreadable ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise WorkbenchError(f"{meta_path}: not a {FORMAT} meta file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise WorkbenchError(
                f"{meta_path}: format version {meta.get('format_version')!r}; this workbench reads version "
                f"{FORMAT_VERSION} (re-collect the dataset)"
            )
        try:
            hooks = _check_hook_list(meta["hooks"])
            shapes = {h: tuple(int(d) for d in meta["shapes"][h]) for h in hooks}
            n = int(meta["n"])
            shards = [(folder / str(s["file"]), int(s["rows"])) for s in meta["shards"]]
        except (KeyError, TypeError, ValueError, WorkbenchError) as err:
            raise WorkbenchError(f"{meta_path}: malformed ({err})") from None
        total = sum(rows for _, rows in shards)
        if total != n:
            raise WorkbenchError(f"{meta_path}: shards hold {total} rows but n is {n}")
        for shard, rows in shards:
            _check_shard(shard, rows, hooks, shapes)
        labels_path = folder / LABELS
        if not labels_path.is_file():
            raise WorkbenchError(f"{labels_path}: labels file missing; the dataset folder is incomplete")
        try:
            labels = pd.read_parquet(labels_path)
        except Exception as err:  # pyarrow raises its own error types for corrupt files
            raise WorkbenchError(f"{labels_path}: unreadable labels ({err})") from None
        if labels.shape[1] == 0:  # a table with no columns does not keep its row count through parquet
            labels = pd.DataFrame(index=pd.RangeIndex(n))
        if len(labels) != n:
            raise WorkbenchError(f"{labels_path}: {len(labels)} labels but {n} activation rows")
        ds = cls.__new__(cls)
        ds._setup(hooks, shapes, n, labels, meta, {}, shards, folder)
        return ds

    def __repr__(self) -> str:
        src = self._meta.get("source") or {}
        desc = src.get("description") or src.get("kind") or "?"
        width = max(len(h) for h in self._hooks)
        lines = [f"ActivationDataset(N={self._n}, {len(self._hooks)} hook{'s' * (len(self._hooks) != 1)}"]
        lines.append(f"  source: {desc}" + (f"  [{self._path}]" if self._path is not None else ""))
        lines += [f"  {h:<{width}}  {self._shapes[h]}" for h in self._hooks]
        cols = [str(c) for c in self._labels.columns]
        lines.append(f"  labels ({len(cols)}): {', '.join(cols) if cols else '(none)'}")
        return "\n".join(lines) + "\n)"


def collect_arrays(
    acts: Mapping[str, Tensor], labels: LabelsLike | None, source: str | Mapping | None = None, seed: int | None = None
) -> ActivationDataset:
    """A dataset from activations you already have (`{hook: (N, ...) tensor}`, e.g. an ActivationCache) and an
    N-row labels table (DataFrame or dict of columns)."""
    return ActivationDataset(acts, labels, {"source": _source(source, "arrays"), "seed": seed, "created": _now()})


# ----------------------------------------------------------------------------------------------------------- writers
class _Writer:
    """Row-batch validation and label bookkeeping shared by the on-disk and in-memory writers."""

    def __init__(
        self,
        hooks: str | Sequence[str],
        *,
        source: str | Mapping | None,
        seed: int | None,
        dtype: str,
        created: str | None,
    ) -> None:
        self.hooks = _check_hook_list(hooks)
        if dtype not in STORAGE_DTYPES:
            raise unknown("dtype", dtype, STORAGE_DTYPES)
        self.dtype = dtype
        self.source = _source(source, "arrays")
        self.seed = None if seed is None else int(seed)
        self.created = created or _now()
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._columns: list[str] | None = None
        self._labels: list[pd.DataFrame] = []
        self._rows = 0

    @property
    def rows(self) -> int:
        """Rows added so far."""
        return self._rows

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False

    def add(self, acts: Mapping[str, Tensor], labels: LabelsLike | None) -> None:
        raise NotImplementedError

    def close(self, extra_labels: LabelsLike | None = None) -> ActivationDataset:
        raise NotImplementedError

    def _validated(self, acts: Mapping[str, Tensor], labels: LabelsLike | None) -> tuple[dict[str, Tensor], Any]:
        missing = [h for h in self.hooks if h not in acts]
        extra = [str(h) for h in acts if h not in self.hooks]
        if missing or extra:
            raise WorkbenchError(
                f"add() needs exactly the writer's hooks; missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        batch: dict[str, Tensor] = {}
        rows = 0
        for i, h in enumerate(self.hooks):
            t = torch.as_tensor(acts[h]).detach()
            if t.ndim == 0:
                raise WorkbenchError(f"activations for {h!r} are a scalar; need a leading row dimension (rows, ...)")
            if i == 0:
                rows = int(t.shape[0])
            elif t.shape[0] != rows:
                raise WorkbenchError(f"hook {h!r} has {t.shape[0]} rows but hook {self.hooks[0]!r} has {rows}")
            if self._shapes is not None and tuple(t.shape[1:]) != self._shapes[h]:
                raise WorkbenchError(
                    f"hook {h!r}: rows have shape {tuple(t.shape[1:])} but earlier rows had {self._shapes[h]}"
                )
            batch[h] = t
        frame = _as_frame(labels, rows)
        if len(frame) != rows:
            raise WorkbenchError(f"{rows} activations but {len(frame)} labels")
        cols = [str(c) for c in frame.columns]
        if self._columns is not None and cols != self._columns:
            raise WorkbenchError(f"label columns {cols} differ from earlier rows' {self._columns}")
        return batch, frame

    def _commit(self, batch: dict[str, Tensor], frame: pd.DataFrame) -> dict[str, Tensor]:
        if self._shapes is None:
            self._shapes = {h: tuple(t.shape[1:]) for h, t in batch.items()}
        self._columns = [str(c) for c in frame.columns]
        self._labels.append(frame)
        self._rows += len(frame)
        # Copies: a caller may reuse its buffers after add() returns.
        return {h: t.to(device="cpu", dtype=STORAGE_DTYPES[self.dtype], copy=True) for h, t in batch.items()}

    def _final_labels(self, extra_labels: LabelsLike | None) -> pd.DataFrame:
        if self._shapes is None:
            raise WorkbenchError("no activations were added; nothing to write")
        labels = pd.concat(self._labels, ignore_index=True) if len(self._labels) > 1 else self._labels[0]
        if labels.shape[1] == 0:
            labels = pd.DataFrame(index=pd.RangeIndex(self._rows))
        if extra_labels is not None:
            extra = _as_frame(extra_labels, self._rows)
            if len(extra) != self._rows:
                raise WorkbenchError(f"{self._rows} activations but {len(extra)} extra labels")
            clash = sorted(set(map(str, extra.columns)) & set(map(str, labels.columns)))
            if clash:
                raise WorkbenchError(f"extra label column {clash[0]!r} is already a label column")
            labels = pd.concat([labels.reset_index(drop=True), extra], axis=1)
        return labels

    def _meta(self) -> dict:
        return {"source": self.source, "seed": self.seed, "created": self.created, "dtype": self.dtype}


class ShardWriter(_Writer):
    """Stream rows into a dataset folder with bounded memory.

    `add(acts, labels)` takes `{hook: (rows, ...) tensor}` and a matching labels DataFrame / dict of columns, and
    writes `shard-XXXXX.safetensors` whenever `shard_size` rows are buffered; `close(extra_labels=None)` flushes the
    rest, writes labels.parquet (plus optional extra columns for all rows, e.g. outcomes known only at the end) and
    meta.json, moves the folder into place and returns the loaded dataset. Use it as a context manager: an exception
    inside the `with` removes the temporary folder and leaves whatever was at `path` untouched.
    """

    def __init__(
        self,
        path: str | Path,
        hooks: str | Sequence[str],
        shard_size: int = DEFAULT_SHARD_SIZE,
        *,
        source: str | Mapping | None = None,
        seed: int | None = None,
        dtype: str = "float32",
        created: str | None = None,
    ) -> None:
        super().__init__(hooks, source=source, seed=seed, dtype=dtype, created=created)
        if int(shard_size) < 1:
            raise WorkbenchError(f"shard_size must be >= 1, got {shard_size}")
        self.path = Path(path)
        self.shard_size = int(shard_size)
        if self.path.exists() and not (self.path / META).is_file():
            if not self.path.is_dir() or any(self.path.iterdir()):
                raise WorkbenchError(f"{self.path} exists and is not an activation dataset; refusing to replace it")
        self._buf: dict[str, list[Tensor]] = {h: [] for h in self.hooks}
        self._buffered = 0
        self._shards: list[dict] = []
        self._cm = artifacts.writing(self.path)
        self._tmp = self._cm.__enter__()
        self._state = "open"

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is not None:
            self.abort(exc if exc is not None else exc_type())
        elif self._state == "open":
            self.close()
        return False

    def _check_open(self) -> None:
        if self._state != "open":
            raise WorkbenchError(f"the shard writer for {self.path} is already {self._state}")

    def add(self, acts: Mapping[str, Tensor], labels: LabelsLike | None) -> None:
        """Append rows; flushes a shard every `shard_size` rows. Bad input raises without changing the writer."""
        self._check_open()
        batch, frame = self._validated(acts, labels)
        stored = self._commit(batch, frame)
        for h, t in stored.items():
            if t.shape[0]:
                self._buf[h].append(t)
        self._buffered += len(frame)
        try:
            while self._buffered >= self.shard_size:
                self._flush(self.shard_size)
        except BaseException as err:
            self.abort(err)
            raise

    def _flush(self, rows: int) -> None:
        block: dict[str, Tensor] = {}
        for h in self.hooks:
            parts = self._buf[h]
            cat = torch.cat(parts) if len(parts) > 1 else parts[0]
            block[h] = cat[:rows].clone(
                memory_format=torch.contiguous_format
            )  # own storage: safetensors refuses views and tensors sharing memory
            rest = cat[rows:]
            self._buf[h] = [rest.clone(memory_format=torch.contiguous_format)] if rest.shape[0] else []
        name = shard_name(len(self._shards))
        save_file(block, str(self._tmp / name))
        self._shards.append({"file": name, "rows": rows})
        self._buffered -= rows

    def close(self, extra_labels: LabelsLike | None = None) -> ActivationDataset:
        """Flush, write labels + meta, rename the folder into place; returns `ActivationDataset.load(path)`."""
        self._check_open()
        try:
            labels = self._final_labels(extra_labels)
            if self._buffered:
                self._flush(self._buffered)
            labels.to_parquet(self._tmp / LABELS, index=False)
            assert self._shapes is not None
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "hooks": self.hooks,
                "shapes": {h: list(s) for h, s in self._shapes.items()},
                "n": self._rows,
                "shard_size": self.shard_size,
                "shards": self._shards,
                "label_columns": [str(c) for c in labels.columns],
                **self._meta(),
            }
            (self._tmp / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        except BaseException as err:
            self.abort(err)
            raise
        self._state = "closed"
        self._cm.__exit__(None, None, None)
        return ActivationDataset.load(self.path)

    def abort(self, err: BaseException | None = None) -> None:
        """Discard everything written so far (the temporary folder); `path` is left as it was."""
        if self._state != "open":
            return
        self._state = "aborted"
        exc = err if err is not None else WorkbenchError("activation dataset write aborted")
        self._cm.__exit__(type(exc), exc, exc.__traceback__)


class _MemoryWriter(_Writer):
    """The same interface as ShardWriter, building an in-memory dataset (for `collect_maze(out=None)`)."""

    def __init__(self, hooks: Sequence[str], *, source: Mapping, seed: int | None) -> None:
        super().__init__(hooks, source=source, seed=seed, dtype="float32", created=None)
        self._parts: dict[str, list[Tensor]] = {h: [] for h in self.hooks}

    def add(self, acts: Mapping[str, Tensor], labels: LabelsLike | None) -> None:
        batch, frame = self._validated(acts, labels)
        for h, t in self._commit(batch, frame).items():
            self._parts[h].append(t)

    def close(self, extra_labels: LabelsLike | None = None) -> ActivationDataset:
        labels = self._final_labels(extra_labels)
        acts = {h: torch.cat(parts) for h, parts in self._parts.items()}
        return ActivationDataset(acts, labels, self._meta())


def _open_writer(out: str | Path | None, hooks: list[str], shard_size: int, source: dict, seed: int) -> _Writer:
    """Shards on disk when `out` is given, else an in-memory dataset; same rows either way."""
    if out is not None:
        return ShardWriter(out, hooks, shard_size, source=source, seed=seed)
    return _MemoryWriter(hooks, source=source, seed=seed)


def _check_hooks(policy: nn.Module, hooks: str | Sequence[str]) -> list[str]:
    names = hook_names(policy)
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    for h in hooks:
        if h not in names:
            raise unknown("hook", str(h), names)
    return _check_hook_list(hooks)


def _device(policy: nn.Module) -> torch.device:
    p = next(policy.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
