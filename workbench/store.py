"""The results store: one embedded DuckDB file, one row per measurement.

Why DuckDB: every experiment (probe sweeps, steering, patching) writes the same long-format rows -- run, subject,
split, seed, intervention, metric, value with its CI and n -- so reports and notebooks can query all results with SQL
instead of globbing JSON files, and a single file is easy to copy or export to Parquet. Rows are validated before
anything is written and inserted in one transaction, so a failed `add` leaves the store as it was.

Table `results`:
    run_id VARCHAR, subject VARCHAR, split VARCHAR, seed BIGINT, intervention VARCHAR, metric VARCHAR,
    value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, n BIGINT, git_sha VARCHAR, created TIMESTAMP (UTC, naive),
    extra VARCHAR (a JSON document; query it with DuckDB's json functions or `json.loads`).
"""

from __future__ import annotations

import json
import numbers
import os
import secrets
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import duckdb
import pandas as pd

from workbench.errors import WorkbenchError, unknown

__all__ = [
    "COLUMNS",
    "REQUIRED",
    "ResultStore",
    "current_git_sha",
    "default_store_path",
    "new_run_id",
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
_ENV_VAR = "WORKBENCH_STORE"


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
    try:
        return json.dumps(v, sort_keys=True, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"{where}: column 'extra' cannot be encoded as JSON: {exc}") from exc


def _json_default(o: Any) -> Any:
    o = _scalar(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _sql_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------------- store


class ResultStore:
    """A DuckDB file holding the `results` table; use as a context manager or call `close()`.

    `path` may be `":memory:"` (for tests). Parent directories and the table are created if missing; a table from an
    older schema gains any missing columns. `read_only=True` opens an existing file without taking the write lock.
    """

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        if self.path != ":memory:":
            p = Path(self.path).expanduser()
            if read_only and not p.exists():
                raise WorkbenchError(f"result store {p} does not exist")
            if not read_only:
                p.parent.mkdir(parents=True, exist_ok=True)
            self.path = str(p)
        try:
            self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            raise WorkbenchError(f"cannot open result store {self.path}: {str(exc).splitlines()[0]}") from exc
        if not read_only:
            self._ensure_table()

    # -- lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent); DuckDB releases the file lock."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __repr__(self) -> str:
        return f"ResultStore({self.path!r})"

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The underlying DuckDB connection, for ad-hoc SQL."""
        if self._con is None:
            raise WorkbenchError("result store is closed")
        return self._con

    def _ensure_table(self) -> None:
        cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} ({cols})")
        have = {r[0] for r in self.con.execute(f"DESCRIBE {_TABLE}").fetchall()}
        for c, t in COLUMNS.items():
            if c not in have:
                self.con.execute(f"ALTER TABLE {_TABLE} ADD COLUMN {c} {t}")

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
        """Validate every row, then insert them all in one transaction; returns the number of rows inserted.

        Required keys: run_id, subject, metric, value. Unknown keys raise WorkbenchError naming the key and the
        nearest column, and nothing is inserted. Missing optional columns become NULL; `created` defaults to now
        (UTC) and `git_sha` to `current_git_sha()` when the key is absent. `extra` may be a dict (stored as JSON).
        """
        if isinstance(rows, Mapping):
            raise WorkbenchError("add() takes a list of row dicts; wrap a single row in a list")
        values = self._validate(rows)
        if not values:
            return 0
        con = self.con
        placeholders = ", ".join("?" for _ in COLUMNS)
        sql = f"INSERT INTO {_TABLE} ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        con.execute("BEGIN TRANSACTION")
        try:
            if len(values) > 256:
                self._insert_arrow(values)
            else:
                con.executemany(sql, values)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return len(values)

    def _insert_arrow(self, values: list[tuple]) -> None:
        """Bulk path: DuckDB's executemany is slow for thousands of rows, an Arrow scan is not."""
        import pyarrow as pa

        types = {
            "VARCHAR": pa.string(),
            "BIGINT": pa.int64(),
            "DOUBLE": pa.float64(),
            "TIMESTAMP": pa.timestamp("us"),
        }
        columns = list(zip(*values, strict=True))
        table = pa.table(
            {c: pa.array(list(col), type=types[t]) for (c, t), col in zip(COLUMNS.items(), columns, strict=True)}
        )
        name = f"_rows_{secrets.token_hex(4)}"
        self.con.register(name, table)
        try:
            self.con.execute(f"INSERT INTO {_TABLE} ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM {name}")
        finally:
            self.con.unregister(name)

    # -- reading
    def query(self, where: str | None = None, params: list | tuple | dict | None = None) -> pd.DataFrame:
        """Rows of `results` matching the SQL condition `where` (with `?` or `$name` params), in insertion order.

        Example: `store.query("subject = ? AND metric = ?", ["maze-v1", "auroc"])`.
        """
        sql = f"SELECT * FROM {_TABLE}"
        if where:
            sql += f" WHERE {where}"
        sql += " ORDER BY rowid"
        try:
            return self.con.execute(sql, params).df() if params is not None else self.con.execute(sql).df()
        except duckdb.Error as exc:
            raise WorkbenchError(f"bad query condition {where!r}: {str(exc).splitlines()[0]}") from exc

    def runs(self) -> pd.DataFrame:
        """One row per run_id: n_rows, created (first row's time), git_sha and subjects, oldest run first."""
        return self.con.execute(
            f"""
            SELECT run_id,
                   count(*) AS n_rows,
                   min(created) AS created,
                   min(git_sha) AS git_sha,
                   string_agg(DISTINCT subject, ',' ORDER BY subject) AS subjects
            FROM {_TABLE}
            GROUP BY run_id
            ORDER BY min(created), run_id
            """
        ).df()

    def __len__(self) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()[0])

    def export_parquet(self, path: str | Path, where: str | None = None) -> Path:
        """Write `results` (optionally filtered by `where`) to a Parquet file, atomically; returns the path.

        Written to a temporary file next to the target and moved into place with os.replace, so a reader never
        sees a half-written file.
        """
        dest = Path(path).expanduser().resolve()
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        select = f"SELECT * FROM {_TABLE}" + (f" WHERE {where}" if where else "") + " ORDER BY rowid"
        try:
            self.con.execute(f"COPY ({select}) TO {_sql_string(str(tmp))} (FORMAT PARQUET)")
            os.replace(tmp, dest)
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
            raise WorkbenchError(f"bad export condition {where!r}: {str(exc).splitlines()[0]}") from exc
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest
