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

`collect_maze` fills a dataset from a maze agent: activations at the start state of each level, or at every state of
a policy rollout, with labels computed from the environment's true state (positions, BFS distances, decision
squares) and each episode's outcome. `collect_arrays` wraps activations you already have.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from workbench import artifacts
from workbench.errors import WorkbenchError, unknown
from workbench.hooks import hook_names, run_with_cache
from workbench.policy import logits_of, policy_logits
from workbench.rl.agent import Agent
from workbench.rl.envs.maze import (
    SPLITS,
    MazeConfig,
    MazeLevels,
    MazeVecEnv,
    decision_squares,
    distances_to,
)
from workbench.rl.rollout import EpisodeRecords, EpisodeTracker

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "FORMAT",
    "FORMAT_VERSION",
    "LABELS",
    "META",
    "STATES",
    "ActivationDataset",
    "ShardWriter",
    "collect_arrays",
    "collect_coinrun",
    "collect_maze",
    "shard_name",
]

FORMAT = "workbench-activations"
FORMAT_VERSION = 1
META, LABELS = "meta.json", "labels.parquet"
DEFAULT_SHARD_SIZE = 4096
STATES = ("start", "rollout")
MAZE_LABEL_COLUMNS = (
    "level_seed",
    "episode",
    "step",
    "split",
    "maze_size",
    "mouse_row",
    "mouse_col",
    "cheese_row",
    "cheese_col",
    "cheese_cell",
    "corner_row",
    "corner_col",
    "cheese_in_region",
    "cheese_dx",
    "cheese_dy",
    "dist_to_cheese",
    "dist_to_corner",
    "decision_row",
    "decision_col",
    "at_decision_square",
    "outcome_cheese",
    "outcome_corner_first",
    "outcome_length",
)
"""The label columns `collect_maze` writes: ground truth from the env plus each episode's outcome."""
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


# ------------------------------------------------------------------------------------------------------ maze collect
class _MazeLabeller:
    """Ground-truth labels for rows (level index, step, mouse cell); per-level maps computed once per batch of levels.

    Cells are world (row, col) coordinates. `decision_row/col` is the level's decision square as seen from the start
    (a property of the maze, constant over the episode; -1 where there is none)."""

    def __init__(self, levels: MazeLevels, split: str) -> None:
        w = levels.world_size
        self.split = split
        self.seeds, self.size, self.cheese = levels.seeds, levels.size, levels.cheese
        self.has = levels.has_cheese()
        self.corner = levels.corner()
        self.in_region = levels.in_region(levels.cheese) & self.has
        self.cheese_cell = np.where(self.has, levels.cheese[:, 0] * w + levels.cheese[:, 1], -1)
        # A removed cheese (NO_CHEESE) has no free target cell, so its distances are -1 everywhere.
        self.d_cheese = distances_to(levels, levels.cheese).astype(np.int32)
        self.d_corner = distances_to(levels, self.corner).astype(np.int32)
        self.decision = decision_squares(levels)

    def rows(self, idx: np.ndarray, step: int, mouse: np.ndarray) -> dict[str, np.ndarray]:
        k = idx.size
        mr, mc = mouse[:, 0].astype(np.int64), mouse[:, 1].astype(np.int64)
        cheese, has, dec = self.cheese[idx], self.has[idx], self.decision[idx]
        return {
            "level_seed": self.seeds[idx].astype(np.int64),
            "episode": idx.astype(np.int64),
            "step": np.full(k, step, dtype=np.int64),
            "split": np.full(k, self.split, dtype=object),
            "maze_size": self.size[idx].astype(np.int64),
            "mouse_row": mr,
            "mouse_col": mc,
            "cheese_row": cheese[:, 0].astype(np.int64),
            "cheese_col": cheese[:, 1].astype(np.int64),
            "cheese_cell": self.cheese_cell[idx].astype(np.int64),
            "corner_row": self.corner[idx, 0].astype(np.int64),
            "corner_col": self.corner[idx, 1].astype(np.int64),
            "cheese_in_region": self.in_region[idx],
            "cheese_dx": np.where(has, cheese[:, 1] - mc, 0).astype(np.int64),
            "cheese_dy": np.where(has, cheese[:, 0] - mr, 0).astype(np.int64),
            "dist_to_cheese": self.d_cheese[idx, mr, mc].astype(np.int64),
            "dist_to_corner": self.d_corner[idx, mr, mc].astype(np.int64),
            "decision_row": dec[:, 0].astype(np.int64),
            "decision_col": dec[:, 1].astype(np.int64),
            "at_decision_square": (dec[:, 0] >= 0) & (dec[:, 0] == mr) & (dec[:, 1] == mc),
        }


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


def _collect_start(
    policy: nn.Module,
    levels: MazeLevels,
    labeller: _MazeLabeller,
    hooks: list[str],
    batch_size: int,
    writer: _Writer,
    bar: tqdm,
) -> list[np.ndarray]:
    device, episodes = _device(policy), []
    with torch.no_grad():
        for lo in range(0, len(levels), batch_size):
            idx = np.arange(lo, min(lo + batch_size, len(levels)))
            sub = levels.select(idx)
            _, cache = run_with_cache(policy, torch.as_tensor(sub.observe(), device=device), names_filter=hooks)
            writer.add({h: cache[h] for h in hooks}, labeller.rows(idx, 0, sub.mouse))
            episodes.append(idx)
            bar.update(idx.size)
    return episodes


def _collect_rollout(
    policy: nn.Module,
    levels: MazeLevels,
    labeller: _MazeLabeller,
    hooks: list[str],
    config: MazeConfig,
    seed: int,
    cap: int,
    batch_size: int,
    writer: _Writer,
    bar: tqdm,
) -> tuple[list[np.ndarray], EpisodeRecords]:
    """One episode per level, all levels stepping together as in `run_episodes` (same env, same seeded sampling, same
    bookkeeping); the forward pass runs in chunks of `batch_size` and caches the hooks only for chunks holding a state
    to record. The logits of that same forward pass choose the actions."""
    n, device = len(levels), _device(policy)
    env = MazeVecEnv(n, split="ood", config=config)
    obs, _ = env.reset(seed=seed, options={"levels": levels})  # seed: finished envs' replacement levels reproducible
    gen = torch.Generator().manual_seed(seed)
    outcomes = EpisodeTracker(levels)
    episodes: list[np.ndarray] = []
    with torch.no_grad():
        for t in range(config.max_steps):
            record = ~outcomes.done if t < cap else np.zeros(n, dtype=bool)
            logits = []
            for lo in range(0, n, batch_size):
                x = torch.as_tensor(obs[lo : lo + batch_size], device=device)
                rows = np.flatnonzero(record[lo : lo + batch_size])
                if rows.size:
                    out, cache = run_with_cache(policy, x, names_filter=hooks)
                    chunk_logits = logits_of(out, x.shape[0])
                    sel = torch.as_tensor(rows, device=x.device)
                    idx = lo + rows
                    writer.add({h: cache[h][sel] for h in hooks}, labeller.rows(idx, t, env.levels.mouse[idx]))
                    episodes.append(idx)
                else:
                    chunk_logits = policy_logits(policy, x)
                logits.append(chunk_logits.float().cpu())
            probs = torch.softmax(torch.cat(logits).cpu(), dim=-1)
            action = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            obs, _, _, _, info = env.step(action.numpy())
            outcomes.update(info)
            bar.update(1)
            bar.set_postfix(rows=writer.rows, running=int((~outcomes.done).sum()))
            if outcomes.done.all():
                break
    return episodes, outcomes.records()


def _check_collect_args(
    policy: nn.Module,
    hooks: str | Sequence[str],
    split: str,
    states: str,
    episodes: int,
    batch_size: int,
    max_states_per_episode: int | None,
) -> list[str]:
    """Validate the arguments every agent collector shares; returns the checked hook list."""
    hooks = _check_hooks(policy, hooks)
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    if states not in STATES:
        raise unknown("states", states, STATES)
    if int(episodes) < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    if int(batch_size) < 1:
        raise WorkbenchError(f"batch_size must be >= 1, got {batch_size}")
    if max_states_per_episode is not None and int(max_states_per_episode) < 1:
        raise WorkbenchError(
            f"max_states_per_episode must be >= 1 (or None for whole episodes), got {max_states_per_episode}"
        )
    return hooks


def _agent_source(
    agent: Agent,
    kind: str,
    noun: str,
    split: str,
    states: str,
    episodes: int,
    seed: int,
    max_states_per_episode: int | None,
) -> dict:
    """The dataset's `source` record for an agent collection (what was collected, from which agent and env)."""
    return {
        "kind": kind,
        "description": f"{states} states of agent {agent.name!r} on {episodes} {split} {noun} (seed {seed})",
        "agent": agent.name,
        "agent_path": str(agent.path),
        "split": split,
        "states": states,
        "episodes": int(episodes),
        "max_states_per_episode": max_states_per_episode,
        "env_config": asdict(agent.env_config),
    }


def _open_writer(out: str | Path | None, hooks: list[str], shard_size: int, source: dict, seed: int) -> _Writer:
    """Shards on disk when `out` is given, else an in-memory dataset; same rows either way."""
    if out is not None:
        return ShardWriter(out, hooks, shard_size, source=source, seed=seed)
    return _MemoryWriter(hooks, source=source, seed=seed)


def collect_maze(
    agent: Agent,
    hooks: str | Sequence[str],
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    states: str = "start",
    max_states_per_episode: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    out: str | Path | None = None,
    batch_size: int = 512,
    progress: bool = True,
) -> ActivationDataset:
    """Activations of a maze agent at `hooks` with ground-truth labels, one row per recorded state.

    Levels are `levels_for(split, episodes, seed, agent.env_config)` (episode i = level i).
    - `states="start"`: one row per level, the mouse at its start cell.
    - `states="rollout"`: the policy plays one episode per level (actions sampled with a torch generator seeded by
      `seed`, exactly as `run_episodes`); one row per step of each still-running episode (at most the first
      `max_states_per_episode` steps), recorded before that step's action. The terminal state is not a row.

    Labels (cells in world (row, col) coordinates; see `_MazeLabeller`): level_seed, episode, step, split,
    maze_size, mouse_row/col, cheese_row/col, cheese_cell (row * W + col), corner_row/col, cheese_in_region,
    cheese_dx/dy (cheese minus mouse, col/row), dist_to_cheese / dist_to_corner (BFS path lengths from the mouse),
    decision_row/col (-1: none), at_decision_square, and per-episode outcomes outcome_cheese, outcome_corner_first,
    outcome_length (for "start", from `run_episodes(policy, levels, config, seed=seed)`; for "rollout", from the
    recorded rollout itself). With `out` the dataset is streamed to that folder in shards of `shard_size` rows and
    returned loaded from it; otherwise it is built in memory. Same arguments, same dataset.
    """
    policy = agent.policy
    hooks = _check_collect_args(policy, hooks, split, states, episodes, batch_size, max_states_per_episode)
    config: MazeConfig = agent.env_config
    cap = config.max_steps if max_states_per_episode is None else int(max_states_per_episode)
    levels = agent.world.levels(split, int(episodes), seed)
    if states == "rollout" and type(levels) is not MazeLevels:  # rollouts step the native MazeVecEnv
        raise WorkbenchError(
            f"states='rollout' collection is implemented for the native maze; {agent.name!r} is a {agent.kind} "
            "subject: use states='start'"
        )
    source = _agent_source(agent, agent.kind, "mazes", split, states, episodes, seed, max_states_per_episode)
    source |= {"world_size": levels.world_size, "pixels": bool(levels.PIXELS)}  # how cells map onto layer grids
    writer = _open_writer(out, hooks, shard_size, source, seed)
    labeller = _MazeLabeller(levels, split)
    with writer:
        if states == "start":
            with tqdm(total=len(levels), desc="collect start", unit="level", disable=not progress) as bar:
                rows = _collect_start(policy, levels, labeller, hooks, int(batch_size), writer, bar)
            records = agent.world.run(policy, levels, seed=seed)
        else:
            with tqdm(total=config.max_steps, desc="collect rollout", unit="step", disable=not progress) as bar:
                rows, records = _collect_rollout(
                    policy, levels, labeller, hooks, config, seed, cap, int(batch_size), writer, bar
                )
        episode = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        outcomes = {
            "outcome_cheese": records.cheese_reached[episode],
            "outcome_corner_first": records.corner_first[episode],
            "outcome_length": records.length[episode].astype(np.int64),
        }
        return writer.close(extra_labels=outcomes)


# --------------------------------------------------------------------------------------------------- coinrun collect
COINRUN_LABEL_COLUMNS = (
    "level_seed",
    "episode",
    "step",
    "split",
    "agent_row",
    "agent_col",
    "rise",
    "coin_present",
    "coin_row",
    "coin_col",
    "coin_dx",
    "coin_dy",
    "coin_visible",
    "coin_right",
    "exit_dx",
    "exit_dy",
    "exit_visible",
    "coin_at_exit",
    "dist_to_coin",
    "dist_to_exit",
    "outcome_coin",
    "outcome_exit",
    "outcome_exit_without_coin",
    "outcome_length",
)
"""The label columns `collect_coinrun` writes: ground truth from the env and planner plus each episode's outcome."""


class _CoinRunLabeller:
    """Ground-truth labels for CoinRun rows (level index, step, live level state). Planner distance tables (fewest
    steps from each (cell, jump counter) state to the coin / to the exit) are computed once per batch of levels."""

    def __init__(self, levels: Any, split: str, config: Any) -> None:
        from workbench.rl.coinrun.planner import UNREACHABLE, distances, on_cells, transitions

        j = config.jump_height
        self.split, self.view, self.j, self.unreachable = split, config.view, j, UNREACHABLE
        self.seeds, self.coin_at_exit = levels.seeds, levels.coin_at_exit()
        nxt, dead = transitions(levels, j)
        self.d_exit = distances(nxt, dead, levels.exit, levels.width, j)
        self.d_coin = distances(nxt, dead | on_cells(levels, levels.exit, j), levels.coin, levels.width, j)
        self.d_coin[self.coin_at_exit] = self.d_exit[self.coin_at_exit]

    def rows(self, idx: np.ndarray, step: int, live: Any) -> dict[str, np.ndarray]:
        """Labels for levels `idx`, whose current state is the sub-batch `live` (agent, rise, coin as now)."""
        from workbench.rl.coinrun.planner import state_index

        k, v = idx.size, self.view
        agent, coin, exit_ = live.agent, live.coin, live.exit
        present = live.has_coin()
        dcoin = np.where(present[:, None], coin - agent, 0)
        dexit = exit_ - agent
        state = state_index(live, agent, live.rise, self.j)

        def dist(table: np.ndarray, ok: np.ndarray) -> np.ndarray:
            d = table[idx, state]
            return np.where(ok & (d < self.unreachable), d, -1).astype(np.int64)

        return {
            "level_seed": self.seeds[idx].astype(np.int64),
            "episode": idx.astype(np.int64),
            "step": np.full(k, step, dtype=np.int64),
            "split": np.full(k, self.split, dtype=object),
            "agent_row": agent[:, 0].astype(np.int64),
            "agent_col": agent[:, 1].astype(np.int64),
            "rise": live.rise.astype(np.int64),
            "coin_present": present,
            "coin_row": coin[:, 0].astype(np.int64),
            "coin_col": coin[:, 1].astype(np.int64),
            "coin_dx": dcoin[:, 1].astype(np.int64),
            "coin_dy": dcoin[:, 0].astype(np.int64),
            "coin_visible": present & np.all(np.abs(dcoin) <= v, axis=1),
            "coin_right": present & (dcoin[:, 1] > 0),
            "exit_dx": dexit[:, 1].astype(np.int64),
            "exit_dy": dexit[:, 0].astype(np.int64),
            "exit_visible": np.all(np.abs(dexit) <= v, axis=1),
            "coin_at_exit": self.coin_at_exit[idx],
            "dist_to_coin": dist(self.d_coin, present),
            "dist_to_exit": dist(self.d_exit, np.ones(k, dtype=bool)),
        }


def collect_coinrun(
    agent: Agent,
    hooks: str | Sequence[str],
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    states: str = "rollout",
    max_states_per_episode: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    out: str | Path | None = None,
    batch_size: int = 512,
    progress: bool = True,
) -> ActivationDataset:
    """Activations of a CoinRun agent at `hooks` with ground-truth labels, one row per recorded state: the CoinRun
    counterpart of `collect_maze` (same arguments, same dataset format, same seeded sampling as `run_episodes`).

    Levels are `levels_for(split, episodes, seed, agent.env_config)`. `states="start"`: one row per level at its
    start (the coin is often out of view there); `"rollout"` (default): one row per step of each running episode,
    recorded before that step's action (a collected coin is gone from later rows). Labels (COINRUN_LABEL_COLUMNS):
    positions (row, col), the jump counter `rise`, coin_present, coin_dx/dy and exit_dx/dy (target minus agent,
    col/row), coin_visible / exit_visible (inside the egocentric window), coin_right (coin ahead), coin_at_exit,
    dist_to_coin / dist_to_exit (planner steps from this state; -1 unreachable or absent) and per-episode outcomes
    outcome_coin, outcome_exit, outcome_exit_without_coin, outcome_length."""
    from workbench.rl.coinrun.rollout import CoinRunTracker
    from workbench.rl.coinrun.rollout import levels_for as coinrun_levels
    from workbench.rl.coinrun.rollout import run_episodes as coinrun_episodes
    from workbench.rl.envs.coinrun import CoinRunConfig, CoinRunVecEnv
    from workbench.rl.envs.coinrun import observe as coinrun_observe

    policy = agent.policy
    hooks = _check_collect_args(policy, hooks, split, states, episodes, batch_size, max_states_per_episode)
    config = agent.env_config
    if not isinstance(config, CoinRunConfig):
        raise WorkbenchError(f"collect_coinrun needs a CoinRun agent; {agent.name!r} is a {agent.env_kind} agent")
    cap = config.max_steps if max_states_per_episode is None else int(max_states_per_episode)
    levels = coinrun_levels(split, int(episodes), seed, config)
    source = _agent_source(agent, "coinrun", "CoinRun levels", split, states, episodes, seed, max_states_per_episode)
    writer = _open_writer(out, hooks, shard_size, source, seed)
    labeller = _CoinRunLabeller(levels, split, config)
    device, n, rows = _device(policy), len(levels), []
    with writer:
        if states == "start":
            with torch.no_grad():
                for lo in range(0, n, int(batch_size)):
                    idx = np.arange(lo, min(lo + int(batch_size), n))
                    sub = levels.select(idx)
                    x = torch.as_tensor(coinrun_observe(sub, config.view), device=device)
                    _, cache = run_with_cache(policy, x, names_filter=hooks)
                    writer.add({h: cache[h] for h in hooks}, labeller.rows(idx, 0, sub))
                    rows.append(idx)
            records = coinrun_episodes(policy, levels, config, seed=seed)
        else:
            env = CoinRunVecEnv(n, "train", CoinRunConfig(**{**asdict(config), "random_coin_percent": 0.0}))
            obs, _ = env.reset(seed=seed, options={"levels": levels})
            gen = torch.Generator().manual_seed(seed)
            tracker = CoinRunTracker(levels)
            bar = tqdm(total=config.max_steps, desc="collect", unit="step", disable=not progress)
            with torch.no_grad(), bar:
                for t in range(config.max_steps):
                    record = ~tracker.done if t < cap else np.zeros(n, dtype=bool)
                    logits = []
                    for lo in range(0, n, int(batch_size)):
                        x = torch.as_tensor(obs[lo : lo + int(batch_size)], device=device)
                        sel = np.flatnonzero(record[lo : lo + int(batch_size)])
                        if sel.size:
                            out, cache = run_with_cache(policy, x, names_filter=hooks)
                            chunk = logits_of(out, x.shape[0])
                            idx = lo + sel
                            live = env.levels.select(idx)
                            pick = torch.as_tensor(sel, device=x.device)
                            writer.add({h: cache[h][pick] for h in hooks}, labeller.rows(idx, t, live))
                            rows.append(idx)
                        else:
                            chunk = policy_logits(policy, x)
                        logits.append(chunk)
                    probs = torch.softmax(torch.cat(logits).cpu(), dim=-1)
                    obs, _, _, _, info = env.step(torch.multinomial(probs, 1, generator=gen).squeeze(1).numpy())
                    tracker.update(info)
                    bar.update(1)
                    if tracker.done.all():
                        break
            records = tracker.records()
        episode = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        outcomes = {
            "outcome_coin": records.coin_collected[episode],
            "outcome_exit": records.exit_reached[episode],
            "outcome_exit_without_coin": records.exit_without_coin[episode],
            "outcome_length": records.length[episode].astype(np.int64),
        }
        return writer.close(extra_labels=outcomes)


# ---------------------------------------------------------------------------------------------------- prompt collect
PROMPT_POSITIONS = ("last", "all")


def _prompt_tokens(tokens: Any, lengths: Any) -> tuple[Tensor, np.ndarray]:
    """(N, T) int64 tokens (right-padded with 0 for a list) and the (N,) true lengths, validated."""
    if isinstance(tokens, (list, tuple)):
        if lengths is not None:
            raise WorkbenchError("lengths is only for a padded (N, T) tensor; a list of prompts gives its own lengths")
        rows = []
        for i, t in enumerate(tokens):
            t = torch.as_tensor(t)
            if t.ndim != 1 or (t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)):
                raise WorkbenchError(f"prompt {i} must be a 1-D tensor of token ids, got {t.dtype} {tuple(t.shape)}")
            rows.append(t.to(dtype=torch.long, device="cpu"))
        n = len(rows)
        lens = np.array([r.numel() for r in rows], dtype=np.int64)
        width = int(lens.max()) if n else 0
        padded = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(rows):
            padded[i, : r.numel()] = r
    else:
        t = torch.as_tensor(tokens)
        if t.ndim != 2 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise WorkbenchError(
                f"tokens must be an (N, T) integer tensor or a list of 1-D token tensors, got {t.dtype} "
                f"{tuple(t.shape)}"
            )
        padded = t.to(dtype=torch.long, device="cpu")
        n, width = padded.shape
        if lengths is None:
            lens = np.full(n, width, dtype=np.int64)
        else:
            la = lengths.detach().cpu().numpy() if isinstance(lengths, Tensor) else np.asarray(lengths)
            if la.shape != (n,) or not np.issubdtype(la.dtype, np.integer):
                raise WorkbenchError(f"lengths must be ({n},) integers (one per prompt), got {la.dtype} {la.shape}")
            lens = la.astype(np.int64)
            bad = np.flatnonzero(lens > width)
            if bad.size:
                i = int(bad[0])
                raise WorkbenchError(f"prompt {i} has length {lens[i]} but tokens has only {width} columns")
    if n == 0:
        raise WorkbenchError("no prompts to collect")
    empty = np.flatnonzero(lens < 1)
    if empty.size:
        raise WorkbenchError(f"prompt {int(empty[0])} has length {int(lens[empty[0]])}; every prompt needs a token")
    return padded, lens


def _prompt_positions(positions: Any, lens: np.ndarray) -> np.ndarray | None:
    """Per-prompt position for "last" / an int (checked against each prompt's length); None for "all"."""
    if isinstance(positions, str):
        if positions not in PROMPT_POSITIONS:
            raise unknown("positions", positions, PROMPT_POSITIONS)
        return None if positions == "all" else lens - 1
    if isinstance(positions, (bool, np.bool_)) or not isinstance(positions, (int, np.integer)):
        raise WorkbenchError(f'positions must be "last", "all" or an int, got {positions!r}')
    p = int(positions)
    pos = lens + p if p < 0 else np.full(lens.shape, p, dtype=np.int64)
    bad = np.flatnonzero((pos < 0) | (pos >= lens))
    if bad.size:
        i = int(bad[0])
        raise WorkbenchError(
            f"position {p} is outside prompt {i} (length {int(lens[i])}); "
            f"an int position must lie in [-length, length) for every prompt"
        )
    return pos.astype(np.int64)


def collect_prompts(
    model: nn.Module,
    tokens: Tensor | Sequence[Tensor],
    labels: LabelsLike | None,
    hooks: str | Sequence[str],
    positions: str | int = "last",
    batch_size: int = 32,
    out: str | Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    seed: int | None = None,
    progress: bool = True,
    *,
    lengths: Tensor | Sequence[int] | None = None,
) -> ActivationDataset:
    """Activations of a token model at `hooks` for N prompts, with the prompts' labels.

    `model` is any nn.Module called as `model(tokens)` on a (B, T) LongTensor (e.g. a TransformerLens
    HookedTransformer) whose activations at `hooks` are (B, T, ...); each row keeps the per-position shape (d_model,
    or n_heads x d_head, ...). `tokens` is an (N, T) integer tensor, right-padded, with the true lengths in `lengths`
    ((N,); default: all T), or a list of 1-D token tensors of varying length (padded with 0 here).
    `labels` is an N-row DataFrame or dict of columns (or None).

    `positions`:
    - "last": one row per prompt, at its last real token (length - 1);
    - "all": one row per (prompt, real position), in prompt then position order, the prompt's labels repeated;
    - an int: one row per prompt at that position; a negative int counts back from each prompt's last real token
      (-1 is the last). It must be inside every prompt.
    The labels table gains the columns `prompt` (row of `tokens`) and `position` (token index).

    Everything is checked before the model runs: labels vs prompt count, hook names, each prompt against
    `model.cfg.n_ctx` (when the model has one) and `model.cfg.d_vocab`, positions vs lengths. Only the named hooks are
    cached, under `torch.no_grad`, `batch_size` prompts at a time; padding after the longest prompt is dropped. Rows at
    real positions do not depend on padding for a causal model (a bidirectional one sees the pad tokens). The model's
    train/eval mode is left alone; with `seed`, torch's RNG is seeded for the forward passes (in a forked RNG state,
    so the caller's is untouched) so stochastic modules are reproducible too; `seed` is recorded in the meta either way.
    With `out` the rows are streamed to that folder in shards of `shard_size` rows (nothing is left there on error)
    and the dataset is returned loaded from it; otherwise it is built in memory. Same arguments, same dataset.
    """
    padded, lens = _prompt_tokens(tokens, lengths)
    n = len(lens)
    frame = _as_frame(labels, n)
    if len(frame) != n:
        raise WorkbenchError(f"{n} prompts but {len(frame)} labels")
    clash = [c for c in ("prompt", "position") if c in set(map(str, frame.columns))]
    if clash:
        raise WorkbenchError(f"label column {clash[0]!r} is reserved: collect_prompts adds it; rename yours")
    hooks = _check_hooks(model, hooks)
    cfg = getattr(model, "cfg", None)
    n_ctx, d_vocab = getattr(cfg, "n_ctx", None), getattr(cfg, "d_vocab", None)
    if isinstance(n_ctx, int) and n_ctx > 0:
        long = np.flatnonzero(lens > n_ctx)
        if long.size:
            i = int(long[0])
            raise WorkbenchError(f"prompt {i} has {int(lens[i])} tokens but the model's n_ctx is {n_ctx}")
    width = int(lens.max())
    padded = padded[:, :width]
    real = torch.arange(width)[None, :] < torch.as_tensor(lens)[:, None]
    ids = padded[real]
    vocab = d_vocab if isinstance(d_vocab, int) and d_vocab > 0 else None
    bad_ids = (ids < 0) | (ids >= vocab) if vocab is not None else ids < 0
    if bool(bad_ids.any()):
        flat = int(torch.nonzero(bad_ids)[0, 0])
        rows = np.repeat(np.arange(n), lens)
        i = int(rows[flat])
        tok = int(ids[flat])
        limit = f" (the model's d_vocab is {vocab})" if vocab is not None else ""
        raise WorkbenchError(f"prompt {i} has token id {tok}, outside the vocabulary{limit}")
    pos = _prompt_positions(positions, lens)
    if int(batch_size) < 1:
        raise WorkbenchError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)

    source = {
        "kind": "prompts",
        "description": f"{positions} positions of {n} prompts through {type(model).__name__}",
        "model": type(model).__name__,
        "positions": positions if isinstance(positions, str) else int(positions),
        "prompts": n,
        "max_length": width,
    }
    writer: _Writer
    if out is not None:
        writer = ShardWriter(out, hooks, shard_size, source=source, seed=seed)
    else:
        writer = _MemoryWriter(hooks, source=source, seed=seed)
    device = _device(model)
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None)
    with writer, rng, torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed))
        with tqdm(total=n, desc="collect prompts", unit="prompt", disable=not progress) as bar:
            for lo in range(0, n, batch_size):
                idx = np.arange(lo, min(lo + batch_size, n))
                _, cache = run_with_cache(model, padded[lo : lo + idx.size].to(device), names_filter=hooks)
                if pos is None:
                    mask = real[lo : lo + idx.size]
                    prompt = np.repeat(idx, lens[idx])
                    where = np.concatenate([np.arange(k) for k in lens[idx]])
                else:
                    mask = None
                    prompt, where = idx, pos[idx]
                acts: dict[str, Tensor] = {}
                for h in hooks:
                    t = cache[h]
                    if t.ndim < 2 or tuple(t.shape[:2]) != (idx.size, width):
                        raise WorkbenchError(
                            f"hook {h!r} output has shape {tuple(t.shape)}; collect_prompts needs (batch, position, "
                            f"...) = ({idx.size}, {width}, ...) -- pick a per-position hook"
                        )
                    if mask is not None:
                        acts[h] = t[mask.to(t.device)]
                    else:
                        sel = torch.as_tensor(where, device=t.device)
                        acts[h] = t[torch.arange(idx.size, device=t.device), sel]
                rows = frame.iloc[prompt].reset_index(drop=True)
                rows["prompt"] = prompt.astype(np.int64)
                rows["position"] = where.astype(np.int64)
                writer.add(acts, rows)
                bar.update(idx.size)
        return writer.close()


__all__ += ["PROMPT_POSITIONS", "collect_prompts"]
