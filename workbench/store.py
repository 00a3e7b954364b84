"""The results store: one row per measurement, written by many processes at once, never losing one.

Why DuckDB: every experiment (probe sweeps, steering, patching) writes the same long-format rows -- run, subject,
split, seed, intervention, metric, value with its CI and n -- so reports and notebooks query all results with SQL
instead of globbing JSON files, and export them to Parquet.

Why append-only segment files, merged on read (and not one DuckDB file every writer opens): DuckDB lets one process
at a time open a database file for writing, and a read-only reader cannot open it while a writer holds it. With a
single shared file, two `lm eval` runs finishing together meant one of them failed after all its work, and
`workbench results` failed while anything wrote. A bounded lock wait would shrink that window but not close it: a slow
writer, a long-lived reader (the app) or a stale lock still turns finished work into an error, and file locks are
unreliable on network filesystems. So each `add()` writes its rows to a new Parquet file of its own
(`<store>.segments/<time-ns>-<pid>-<random>.parquet`): written under a hidden temporary name, fsynced, then renamed
into place, which is atomic. Writers never wait for each other or for readers; a reader sees a write completely or
not at all; a writer killed mid-write leaves only a hidden temporary file that readers ignore and the next write
removes. Readers query one view, `results`, the union of the store file itself (`<store>`, a DuckDB database: rows
from before segments existed, plus segments folded in by `compact()`) and every segment, in write order.
`compact()` folds segments into the DuckDB file in one transaction that also records their names, so a reader never
counts a row twice; it is the only operation that takes a lock, waiting at most `$WORKBENCH_STORE_TIMEOUT` seconds
(default 30). `add()` runs it without waiting once `AUTO_COMPACT` (256) segments have accumulated, so reads stay fast
(measured: ~0.5 s per query over 1,000 segments, 0.02 s after compaction) and a busy store just compacts later.

Rows are validated before anything is written, and each `add` is one file, so a failed `add` leaves the store as it
was.

Columns of `results`:
    run_id VARCHAR, subject VARCHAR, split VARCHAR, seed BIGINT, intervention VARCHAR, metric VARCHAR,
    value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, n BIGINT, git_sha VARCHAR, created TIMESTAMP (UTC, naive),
    extra VARCHAR (a JSON document; query it with DuckDB's json functions or `json.loads`).
"""

from __future__ import annotations

import json
import numbers
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import duckdb
import pandas as pd

from workbench.errors import WorkbenchError, unknown
from workbench.validate import check_output_file, strict_jsonable

__all__ = [
    "COLUMNS",
    "REQUIRED",
    "ResultStore",
    "check_store_path",
    "current_git_sha",
    "default_store_path",
    "new_run_id",
    "segments_dir",
]

# column -> DuckDB type, in table order
COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR",
    "subject": "VARCHAR",
    "split": "VARCHAR",
    "seed": "BIGINT",
    "intervention": "VARCHAR",
    "metric": "VARCHAR",
    "value": "DOUBLE",
    "ci_low": "DOUBLE",
    "ci_high": "DOUBLE",
    "n": "BIGINT",
    "git_sha": "VARCHAR",
    "created": "TIMESTAMP",
    "extra": "VARCHAR",
}
REQUIRED: tuple[str, ...] = ("run_id", "subject", "metric", "value")
_TABLE = "results"
_MERGED = "merged_segments"  # in the store file: names of segments folded in by compact()
_ENV_VAR = "WORKBENCH_STORE"
_TIMEOUT_VAR = "WORKBENCH_STORE_TIMEOUT"
_SEGMENTS_SUFFIX = ".segments"
AUTO_COMPACT = 256
"""`add()` folds the segments into the store file once this many have accumulated (if no reader holds it then)."""
_STALE_TMP_S = 24 * 3600  # a temporary segment older than this is removed even if its writer's pid is alive

# --------------------------------------------------------------------------------------------------- helpers


def default_store_path() -> Path:
    """`$WORKBENCH_STORE` if set, else `runs/results.duckdb` under the current directory."""
    env = os.environ.get(_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.cwd() / "runs" / "results.duckdb"


def new_run_id(prefix: str) -> str:
    """`<prefix>-<UTC yyyymmddThhmmssZ>-<6 hex>`: sortable by time and unique across concurrent runs."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    head = prefix.rstrip("-_")
    return f"{head}-{stamp}-{secrets.token_hex(3)}" if head else f"{stamp}-{secrets.token_hex(3)}"


def current_git_sha(cwd: str | Path | None = None) -> str | None:
    """Short commit hash of HEAD in `cwd` (default: the current directory), or None outside a git checkout.

    Why: every stored row records the code version that produced it, so a result can be traced back to its commit.
    """
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and sha else None


def _scalar(v: Any) -> Any:
    """numpy scalars and 0-d arrays/tensors as plain Python values."""
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # torch.Tensor
        v = v.detach().cpu().numpy()
    if getattr(v, "shape", None) == () and hasattr(v, "item"):
        return v.item()
    return v


def _coerce(col: str, v: Any, where: str) -> Any:
    """Check and convert one value for column `col`; `where` prefixes error messages (row number)."""
    v = _scalar(v)
    if v is None:
        if col in REQUIRED:
            raise WorkbenchError(f"{where}: required column {col!r} is None")
        return None
    kind = COLUMNS[col]
    if kind == "VARCHAR" and col != "extra":
        if not isinstance(v, str):
            raise WorkbenchError(f"{where}: column {col!r} must be a string, got {type(v).__name__}")
        if col in REQUIRED and not v:
            raise WorkbenchError(f"{where}: required column {col!r} is empty")
        return v
    if kind == "DOUBLE":
        if not isinstance(v, numbers.Real):  # bools are accepted as 0.0 / 1.0
            raise WorkbenchError(f"{where}: column {col!r} must be a number, got {type(v).__name__}")
        return float(v)
    if kind == "BIGINT":
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise WorkbenchError(f"{where}: column {col!r} must be an integer, got {v!r}")
        return int(v)
    if kind == "TIMESTAMP":
        if isinstance(v, str):
            try:
                v = datetime.fromisoformat(v)
            except ValueError as exc:
                raise WorkbenchError(f"{where}: column 'created' is not an ISO timestamp: {v!r}") from exc
        if isinstance(v, pd.Timestamp):
            v = v.to_pydatetime()
        if not isinstance(v, datetime):
            raise WorkbenchError(f"{where}: column 'created' must be a datetime, got {type(v).__name__}")
        if v.tzinfo is not None:  # stored as naive UTC
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v
    # extra: a JSON document
    if isinstance(v, str):
        try:
            json.loads(v)
        except ValueError as exc:
            raise WorkbenchError(f"{where}: column 'extra' is a string but not valid JSON") from exc
        return v
    try:  # strict JSON: NaN / inf become null with a reason (workbench.validate.strict_jsonable)
        return json.dumps(strict_jsonable(v), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"{where}: column 'extra' cannot be encoded as JSON: {exc}") from exc


def _sql_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def segments_dir(path: str | Path) -> Path:
    """The folder of a store's segment files: `<store>.segments` next to the store file."""
    path = Path(path)
    return path.with_name(path.name + _SEGMENTS_SUFFIX)


def _timeout() -> float:
    raw = os.environ.get(_TIMEOUT_VAR, "")
    if not raw:
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        raise WorkbenchError(f"{_TIMEOUT_VAR} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= 3600:
        raise WorkbenchError(f"{_TIMEOUT_VAR} must be in 0..3600 seconds, got {raw!r}")
    return value


def check_store_path(path: str | Path, read_only: bool = False) -> Path:
    """Validate a results-store path before any work, writing nothing; returns it (user-expanded).

    Write mode: not a folder, no ancestor that is a file, a writable folder. Read-only: the store must exist (its
    file or its segments). Errors are one line naming the path and what to do instead."""
    if str(path) == ":memory:":
        return Path(":memory:")
    p = Path(path).expanduser()
    if p.is_dir():
        raise WorkbenchError(f"result store {p} is a folder; a store is a file such as {p / 'results.duckdb'}")
    if read_only:
        seg = segments_dir(p)
        if not p.is_file() and not (seg.is_dir() and any(seg.glob("*.parquet"))):
            for parent in p.parents:
                if parent.exists() and not parent.is_dir():
                    raise WorkbenchError(f"result store {p}: {parent} is a file, not a folder")
            raise WorkbenchError(f"result store {p} does not exist")
        return p
    check_output_file(p, name="result store")
    seg = segments_dir(p)
    if seg.exists() and not seg.is_dir():
        raise WorkbenchError(f"result store {p}: {seg} is a file; the store keeps its segments in that folder")
    return p


def _is_lock_error(err: Exception) -> bool:
    return isinstance(err, duckdb.IOException) and "lock" in str(err).lower()


T = TypeVar("T")


def _with_lock_wait(fn: Callable[[], T], what: str, timeout: float) -> T:
    """Call `fn`, retrying while DuckDB reports a conflicting file lock, for at most `timeout` seconds."""
    deadline, delay = time.monotonic() + timeout, 0.02
    while True:
        try:
            return fn()
        except duckdb.IOException as err:
            if not _is_lock_error(err):
                raise
            if time.monotonic() >= deadline:
                raise WorkbenchError(
                    f"{what}: locked by another process for more than {timeout:g} s ({_TIMEOUT_VAR} sets the wait)"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _arrow_table(values: list[tuple]):
    import pyarrow as pa

    types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "TIMESTAMP": pa.timestamp("us")}
    columns = list(zip(*values, strict=True))
    return pa.table(
        {c: pa.array(list(col), type=types[t]) for (c, t), col in zip(COLUMNS.items(), columns, strict=True)}
    )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------- store


class ResultStore:
    """A results store: the DuckDB file `path` plus its segment folder `<path>.segments`; use as a context manager
    or call `close()`. See the module docstring for why writes go to segment files.

    `path` may be `":memory:"` (one process, for tests). In write mode the parent folders and an empty store file
    are created if missing; `read_only=True` opens an existing store and refuses `add`. Any number of processes may
    read and write one store at the same time. `store.con` is an in-memory DuckDB connection whose view `results`
    holds every row (refreshed on each access), for ad-hoc SQL.
    """

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.read_only = read_only
        self._memory = str(path) == ":memory:"
        self._attached = False
        self._pinned = False  # `con` was handed out: keep the store file attached until close()
        if self._memory:
            self.path = ":memory:"
        else:
            p = check_store_path(path, read_only=read_only)
            self.path = str(p)
            self._file = p
            self._segments = segments_dir(p)
            if not read_only:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise WorkbenchError(f"result store {p}: cannot create {p.parent} ({err.strerror})") from None
                self._create_file()
        self._con: duckdb.DuckDBPyConnection | None = duckdb.connect()
        if self._memory:
            cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
            self._con.execute(f"CREATE TABLE {_TABLE} ({cols})")

    # -- lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent); releases the shared lock on the store file."""
        if self._con is not None:
            self._con.close()
            self._con = None
            self._attached = False

    def __repr__(self) -> str:
        return f"ResultStore({self.path!r})"

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with the view `results` over every row, for ad-hoc SQL.

        The view is rebuilt on each access of `con`, so it includes segments written since. While a connection
        handed out here is in use the store file stays attached read-only (blocking only `compact()`)."""
        con = self._connection()
        if not self._memory:
            self._pinned = True
            self._refresh()
        return con

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise WorkbenchError("result store is closed")
        return self._con

    # -- the store file
    def _create_file(self) -> None:
        """Create an empty store file atomically (built under a temporary name, then hard-linked into place), so a
        concurrent reader never attaches a half-initialised database. An existing file is left as it is."""
        if self._file.exists():
            return
        tmp = self._file.with_name(f".{self._file.name}.{secrets.token_hex(4)}.tmp")
        try:
            con = duckdb.connect(str(tmp))
            try:
                cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
                con.execute(f"CREATE TABLE {_TABLE} ({cols})")
                con.execute(f"CREATE TABLE {_MERGED} (name VARCHAR)")
                con.execute("CHECKPOINT")
            finally:
                con.close()
            try:
                os.link(tmp, self._file)
            except FileExistsError:
                pass  # another process created it first
            except OSError:  # a filesystem without hard links
                if not self._file.exists():
                    os.replace(tmp, self._file)
        except duckdb.Error as err:
            raise WorkbenchError(f"result store {self._file}: cannot create ({str(err).splitlines()[0]})") from None
        except OSError as err:
            raise WorkbenchError(f"result store {self._file}: cannot create ({err.strerror or err})") from None
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                if leftover.exists():
                    leftover.unlink()

    def _attach(self) -> None:
        if self._attached or not self._file.is_file():
            return
        con = self._connection()
        sql = f"ATTACH {_sql_string(str(self._file))} AS base (READ_ONLY)"
        timeout = _timeout()
        try:
            _with_lock_wait(lambda: con.execute(sql), f"result store {self._file}", timeout)
        except duckdb.Error as err:
            raise WorkbenchError(
                f"result store {self._file} is not a DuckDB results store ({str(err).splitlines()[0]})"
            ) from None
        self._attached = True

    def _detach(self) -> None:
        if self._attached and not self._pinned and self._con is not None:
            self._con.execute("DROP VIEW IF EXISTS results")
            self._con.execute("DROP VIEW IF EXISTS _results_all")
            self._con.execute("DETACH base")
            self._attached = False

    # -- reading: one view over the store file and the segments
    def _segment_files(self, merged: set[str]) -> list[Path]:
        if not self._segments.is_dir():
            return []
        return sorted(p for p in self._segments.glob("*.parquet") if p.name not in merged)

    def _refresh(self) -> None:
        """(Re)build the views `_results_all` (with ordering columns) and `results` over every row."""
        con = self._connection()
        self._attach()
        base_cols: set[str] = set()
        merged: set[str] = set()
        if self._attached:
            tables = {
                r[0]
                for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'base'").fetchall()
            }
            if _TABLE in tables:
                base_cols = {
                    r[0]
                    for r in con.execute(
                        "SELECT column_name FROM duckdb_columns() WHERE database_name = 'base' AND table_name = ?",
                        [_TABLE],
                    ).fetchall()
                }
            if _MERGED in tables:
                merged = {r[0] for r in con.execute(f"SELECT name FROM base.{_MERGED}").fetchall()}
        parts = self._segment_files(merged)
        selects = []
        if base_cols:
            cols = ", ".join(c if c in base_cols else f"CAST(NULL AS {t}) AS {c}" for c, t in COLUMNS.items())
            selects.append(f"SELECT {cols}, 0 AS _part, '' AS _file, rowid AS _row FROM base.{_TABLE}")
        if parts:
            files = "[" + ", ".join(_sql_string(str(p)) for p in parts) + "]"
            cols = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in COLUMNS.items())
            selects.append(
                f"SELECT {cols}, 1 AS _part, filename AS _file, file_row_number AS _row FROM read_parquet("
                f"{files}, filename = true, file_row_number = true, union_by_name = true)"
            )
        if not selects:
            cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in COLUMNS.items())
            selects.append(f"SELECT {cols}, 0 AS _part, '' AS _file, 0 AS _row WHERE false")
        con.execute("CREATE OR REPLACE TEMP VIEW _results_all AS " + " UNION ALL ".join(selects))
        con.execute(f"CREATE OR REPLACE TEMP VIEW {_TABLE} AS SELECT {', '.join(COLUMNS)} FROM _results_all")

    def _read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run a read against a fresh view; a segment removed by a concurrent `compact()` means: look again."""
        con = self._connection()
        if self._memory:
            return fn(con)
        for attempt in range(5):
            try:
                self._refresh()
                return fn(con)
            except duckdb.IOException as err:
                if attempt == 4:
                    raise WorkbenchError(f"result store {self.path}: {str(err).splitlines()[0]}") from None
                self._detach()
                time.sleep(0.05 * (attempt + 1))
            finally:
                self._detach()
        raise AssertionError("unreachable")

    # -- writing
    def _validate(self, rows: Iterable[Mapping[str, Any]]) -> list[tuple]:
        out: list[tuple] = []
        now = datetime.now(UTC).replace(tzinfo=None)
        sha: str | None = None
        sha_known = False
        for i, row in enumerate(rows):
            where = f"row {i}"
            if not isinstance(row, Mapping):
                raise WorkbenchError(f"{where}: expected a dict of column -> value, got {type(row).__name__}")
            for key in row:
                if key not in COLUMNS:
                    raise WorkbenchError(f"{where}: {unknown('column', str(key), COLUMNS)}")
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise WorkbenchError(f"{where}: missing required column(s) {', '.join(missing)}")
            vals = {c: _coerce(c, row[c], where) for c in row}
            if "created" not in row or vals["created"] is None:
                vals["created"] = now
            if "git_sha" not in row:
                if not sha_known:
                    sha, sha_known = current_git_sha(), True
                vals["git_sha"] = sha
            out.append(tuple(vals.get(c) for c in COLUMNS))
        return out

    def add(self, rows: list[dict]) -> int:
        """Validate every row, then write them all as one segment file; returns the number of rows written.

        Required keys: run_id, subject, metric, value. Unknown keys raise WorkbenchError naming the key and the
        nearest column, and nothing is written. Missing optional columns become NULL; `created` defaults to now
        (UTC) and `git_sha` to `current_git_sha()` when the key is absent. `extra` may be a dict (stored as JSON).
        Safe to call from any number of processes at once: nothing waits, nothing is lost.
        """
        if self.read_only:
            raise WorkbenchError(f"result store {self.path} was opened read-only; open it without read_only to add")
        if isinstance(rows, Mapping):
            raise WorkbenchError("add() takes a list of row dicts; wrap a single row in a list")
        values = self._validate(rows)
        if not values:
            return 0
        if self._memory:
            self._insert_memory(values)
        else:
            self._write_segment(values)
            self._maybe_compact()
        return len(values)

    def _maybe_compact(self) -> None:
        """Fold segments in once there are `AUTO_COMPACT` of them, if the store file is free right now; never waits
        (a reader holding the file just means: later). Keeps reads fast without anyone running `compact()`."""
        try:
            n = sum(1 for _ in self._segments.glob("*.parquet"))
        except OSError:
            return
        if n < AUTO_COMPACT:
            return
        try:
            self.compact(timeout=0)
        except WorkbenchError:
            pass  # busy: the rows are safe in their segments, the next write tries again

    def _insert_memory(self, values: list[tuple]) -> None:
        con = self._connection()
        con.execute("BEGIN TRANSACTION")
        try:
            name = f"_rows_{secrets.token_hex(4)}"
            con.register(name, _arrow_table(values))
            try:
                con.execute(f"INSERT INTO {_TABLE} ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM {name}")
            finally:
                con.unregister(name)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _write_segment(self, values: list[tuple]) -> Path:
        """One Parquet file per call: hidden temporary name, fsync, atomic rename (see the module docstring)."""
        import pyarrow.parquet as pq

        self._segments.mkdir(parents=True, exist_ok=True)
        self._clean_stale_tmp()
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.parquet"
        tmp = self._segments / f".{name}.{socket.gethostname()}.tmp"
        dest = self._segments / name
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(_arrow_table(values), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except OSError as err:
            raise WorkbenchError(f"result store {self.path}: cannot write {dest} ({err.strerror or err})") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(self._segments)
        return dest

    def _clean_stale_tmp(self) -> None:
        """Remove temporary segments left by killed writers: same host and dead pid, or older than a day."""
        host, now = socket.gethostname(), time.time()
        for tmp in self._segments.glob(".*.tmp"):
            parts = tmp.name[1:].split(".parquet.")  # "<ns>-<pid>-<hex>" and "<host>.tmp"
            try:
                pid = int(parts[0].split("-")[1])
                tmp_host = parts[1][: -len(".tmp")]
                age = now - tmp.stat().st_mtime
            except (IndexError, ValueError, OSError):
                continue
            if age > _STALE_TMP_S or (tmp_host == host and not _pid_alive(pid)):
                tmp.unlink(missing_ok=True)

    def compact(self, timeout: float | None = None) -> int:
        """Fold every segment into the store file in one transaction; returns the number of segments folded in.

        Optional housekeeping (reads stay correct without it, and get slower with many thousands of segments). It
        needs the store file's write lock, so it waits -- at most `$WORKBENCH_STORE_TIMEOUT` seconds -- for readers
        to finish; writers are never blocked. A crash at any point leaves every row counted exactly once."""
        if self._memory:
            return 0
        if self.read_only:
            raise WorkbenchError(f"result store {self.path} was opened read-only; compact() needs write access")
        self._pinned = False
        self._detach()
        what = f"result store {self._file}"
        try:
            rw = _with_lock_wait(
                lambda: duckdb.connect(str(self._file)), what, _timeout() if timeout is None else timeout
            )
        except duckdb.Error as err:
            raise WorkbenchError(f"{what}: cannot open for compaction ({str(err).splitlines()[0]})") from None
        try:
            cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
            rw.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} ({cols})")
            rw.execute(f"CREATE TABLE IF NOT EXISTS {_MERGED} (name VARCHAR)")
            have = {r[0] for r in rw.execute(f"DESCRIBE {_TABLE}").fetchall()}
            for c, t in COLUMNS.items():
                if c not in have:
                    rw.execute(f"ALTER TABLE {_TABLE} ADD COLUMN {c} {t}")
            merged = {r[0] for r in rw.execute(f"SELECT name FROM {_MERGED}").fetchall()}
            present = {p.name for p in self._segments.glob("*.parquet")} if self._segments.is_dir() else set()
            gone = merged - present  # folded in and deleted earlier: no reader can see them any more
            parts = self._segment_files(merged)
            rw.execute("BEGIN TRANSACTION")
            try:
                if gone:
                    rw.executemany(f"DELETE FROM {_MERGED} WHERE name = ?", [[g] for g in sorted(gone)])
                if parts:
                    files = "[" + ", ".join(_sql_string(str(p)) for p in parts) + "]"
                    casts = ", ".join(f"CAST({c} AS {t})" for c, t in COLUMNS.items())
                    rw.execute(
                        f"INSERT INTO {_TABLE} ({', '.join(COLUMNS)}) SELECT {casts} FROM read_parquet({files}, "
                        "filename = true, file_row_number = true, union_by_name = true) "
                        "ORDER BY filename, file_row_number"
                    )
                    rw.executemany(f"INSERT INTO {_MERGED} VALUES (?)", [[p.name] for p in parts])
            except BaseException:
                rw.execute("ROLLBACK")
                raise
            rw.execute("COMMIT")
            rw.execute("CHECKPOINT")
        finally:
            rw.close()
        for p in parts:
            p.unlink(missing_ok=True)
        return len(parts)

    # -- reading
    def query(self, where: str | None = None, params: list | tuple | dict | None = None) -> pd.DataFrame:
        """Rows of `results` matching the SQL condition `where` (with `?` or `$name` params), in write order.

        Example: `store.query("subject = ? AND metric = ?", ["maze-v1", "auroc"])`.
        """
        if self._memory:
            sql = f"SELECT * FROM {_TABLE}" + (f" WHERE {where}" if where else "") + " ORDER BY rowid"
        else:
            sql = (
                f"SELECT {', '.join(COLUMNS)} FROM _results_all"
                + (f" WHERE {where}" if where else "")
                + " ORDER BY _part, _file, _row"
            )

        def run(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
            try:
                return con.execute(sql, params).df() if params is not None else con.execute(sql).df()
            except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
                raise WorkbenchError(f"bad query condition {where!r}: {str(exc).splitlines()[0]}") from None
            except duckdb.InvalidInputException as exc:
                raise WorkbenchError(f"bad query parameters for {where!r}: {str(exc).splitlines()[0]}") from None

        return self._read(run)

    def runs(self) -> pd.DataFrame:
        """One row per run_id: n_rows, created (first row's time), git_sha and subjects, oldest run first."""
        sql = f"""
            SELECT run_id,
                   count(*) AS n_rows,
                   min(created) AS created,
                   min(git_sha) AS git_sha,
                   string_agg(DISTINCT subject, ',' ORDER BY subject) AS subjects
            FROM {_TABLE}
            GROUP BY run_id
            ORDER BY min(created), run_id
            """
        return self._read(lambda con: con.execute(sql).df())

    def __len__(self) -> int:
        return int(self._read(lambda con: con.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()[0]))

    def export_parquet(self, path: str | Path, where: str | None = None) -> Path:
        """Write `results` (optionally filtered by `where`) to a `.parquet` file, atomically; returns the path.

        The destination is validated first (not a folder, no parent that is a file, writable, `.parquet`); the file
        is written under a temporary name next to the target and moved into place with os.replace, so a reader
        never sees a half-written file.
        """
        dest = check_output_file(path, name="export", suffixes=(".parquet",)).resolve()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WorkbenchError(f"export {dest}: cannot create {dest.parent} ({err.strerror})") from None
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        if self._memory:
            select = f"SELECT * FROM {_TABLE}" + (f" WHERE {where}" if where else "") + " ORDER BY rowid"
        else:
            select = (
                f"SELECT {', '.join(COLUMNS)} FROM _results_all"
                + (f" WHERE {where}" if where else "")
                + " ORDER BY _part, _file, _row"
            )

        def run(con: duckdb.DuckDBPyConnection) -> None:
            try:
                con.execute(f"COPY ({select}) TO {_sql_string(str(tmp))} (FORMAT PARQUET)")
            except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
                raise WorkbenchError(f"bad export condition {where!r}: {str(exc).splitlines()[0]}") from None

        try:
            self._read(run)
            os.replace(tmp, dest)
        except OSError as err:
            raise WorkbenchError(f"export {dest}: cannot write ({err.strerror or err})") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest
