"""The DuckDB results store: roundtrip, atomic validation, Parquet export, run grouping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pytest

from workbench import store as store_mod
from workbench.errors import WorkbenchError
from workbench.store import COLUMNS, ResultStore, current_git_sha, default_store_path, new_run_id


def row(run_id="r1", subject="maze", metric="auroc", value=0.9, **kw):
    return {"run_id": run_id, "subject": subject, "metric": metric, "value": value, **kw}


def test_add_query_roundtrip(tmp_path):
    path = tmp_path / "deep" / "dir" / "results.duckdb"  # parent dirs are created
    with ResultStore(path) as st:
        n = st.add(
            [
                row(value=0.91, ci_low=0.85, ci_high=0.95, n=200, split="test", seed=np.int64(3), extra={"layer": 4}),
                row(metric="accuracy", value=np.float32(0.5), git_sha="abc1234", intervention="steer+2"),
            ]
        )
        assert n == 2
        assert len(st) == 2
        df = st.query()
    assert path.exists()
    assert list(df.columns) == list(COLUMNS)
    first, second = df.iloc[0], df.iloc[1]
    assert first["metric"] == "auroc" and first["value"] == pytest.approx(0.91)
    assert first["ci_low"] == pytest.approx(0.85) and first["ci_high"] == pytest.approx(0.95)
    assert first["n"] == 200 and first["seed"] == 3 and first["split"] == "test"
    assert json.loads(first["extra"]) == {"layer": 4}
    assert second["git_sha"] == "abc1234" and second["intervention"] == "steer+2"
    assert second["value"] == pytest.approx(0.5)
    # missing optional columns are NULL, created is filled with (naive UTC) now
    assert pd.isna(second["split"]) and pd.isna(second["seed"])
    now = datetime.now(UTC).replace(tzinfo=None)
    assert abs(first["created"].to_pydatetime() - now) < timedelta(minutes=5)

    # reopening the file sees the rows; filtering with params
    with ResultStore(path) as st:
        df = st.query("metric = ? AND value > ?", ["auroc", 0.5])
        assert len(df) == 1 and df.iloc[0]["value"] == pytest.approx(0.91)
        assert len(st.query("metric = $m", {"m": "accuracy"})) == 1
        with pytest.raises(WorkbenchError, match="bad query"):
            st.query("no_such_column = 1")


def test_git_sha_filled_when_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "current_git_sha", lambda cwd=None: "deadbee")
    with ResultStore(":memory:") as st:
        st.add([row(), row(git_sha=None)])
        df = st.query()
    assert df["git_sha"].iloc[0] == "deadbee"
    assert pd.isna(df["git_sha"].iloc[1])  # explicit None is kept (NULL)


def test_invalid_row_inserts_nothing(tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as st:
        st.add([row(run_id="keep")])
        good = row(run_id="r2")
        bad = row(run_id="r2", vaule=1.0)  # typo of `value`
        with pytest.raises(WorkbenchError) as exc:
            st.add([good, good, bad])
        msg = str(exc.value)
        assert "vaule" in msg and "value" in msg and "row 2" in msg
        assert "\n" not in msg
        assert len(st) == 1  # the two good rows were not inserted either

        with pytest.raises(WorkbenchError, match="missing required column"):
            st.add([{"run_id": "r3", "subject": "s", "metric": "m"}])
        with pytest.raises(WorkbenchError, match="must be a number"):
            st.add([row(value="high")])
        with pytest.raises(WorkbenchError, match="must be an integer"):
            st.add([row(n=2.5)])
        with pytest.raises(WorkbenchError, match="is None"):
            st.add([row(subject=None)])
        with pytest.raises(WorkbenchError, match="list of row dicts"):
            st.add(row())
        assert st.query()["run_id"].tolist() == ["keep"]
        assert st.add([]) == 0


def test_bulk_insert_is_atomic_and_fast_path_roundtrips(tmp_path):
    rows = [row(run_id="bulk", value=float(i), seed=i, n=10, extra={"i": i}) for i in range(1000)]
    with ResultStore(tmp_path / "r.duckdb") as st:
        assert st.add(rows) == 1000
        df = st.query("run_id = 'bulk'")
        assert df["value"].tolist() == [float(i) for i in range(1000)]
        assert df["seed"].tolist() == list(range(1000))
        assert json.loads(df["extra"].iloc[7]) == {"i": 7}
        with pytest.raises(WorkbenchError):
            st.add(rows + [row(bogus=1)])
        assert len(st) == 1000


def test_created_timezone_is_normalised_to_utc():
    aware = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    plus2 = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    with ResultStore(":memory:") as st:
        st.add([row(created=aware), row(created=plus2), row(created="2024-05-01T12:00:00")])
        created = st.query()["created"].tolist()
    assert all(c.to_pydatetime() == datetime(2024, 5, 1, 12, 0) for c in created)


def test_export_parquet(tmp_path):
    out = tmp_path / "exports" / "results.parquet"
    with ResultStore(tmp_path / "r.duckdb") as st:
        st.add([row(run_id="a", value=1.0), row(run_id="b", value=2.0, extra={"k": [1, 2]})])
        written = st.export_parquet(out)
        filtered = st.export_parquet(tmp_path / "only_b.parquet", where="run_id = 'b'")
    assert written == out.resolve() and out.exists()
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp files left behind
    con = duckdb.connect()
    got = con.execute(f"SELECT run_id, value FROM read_parquet('{out}') ORDER BY run_id").fetchall()
    assert got == [("a", 1.0), ("b", 2.0)]
    assert con.execute(f"SELECT count(*) FROM read_parquet('{filtered}')").fetchone()[0] == 1
    con.close()
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS)
    assert table.num_rows == 2


def test_runs_grouping(tmp_path):
    t0 = datetime(2024, 1, 1, 10, 0)
    with ResultStore(tmp_path / "r.duckdb") as st:
        st.add(
            [
                row(run_id="late", subject="lm", created=t0 + timedelta(hours=2)),
                row(run_id="early", subject="maze", created=t0 + timedelta(minutes=5)),
                row(run_id="early", subject="maze", created=t0),
                row(run_id="early", subject="cheese", created=t0 + timedelta(minutes=1)),
            ]
        )
        runs = st.runs()
    assert runs["run_id"].tolist() == ["early", "late"]
    assert runs["n_rows"].tolist() == [3, 1]
    assert runs["created"].iloc[0].to_pydatetime() == t0
    assert runs["subjects"].tolist() == ["cheese,maze", "lm"]


def test_closed_store_and_read_only(tmp_path):
    path = tmp_path / "r.duckdb"
    st = ResultStore(path)
    st.add([row()])
    st.close()
    st.close()  # idempotent
    with pytest.raises(WorkbenchError, match="closed"):
        st.query()
    with ResultStore(path, read_only=True) as ro:
        assert len(ro.query()) == 1
    with pytest.raises(WorkbenchError, match="does not exist"):
        ResultStore(tmp_path / "missing.duckdb", read_only=True)


def test_new_run_id_and_paths(tmp_path, monkeypatch):
    a, b = new_run_id("probe"), new_run_id("probe-")
    assert re.fullmatch(r"probe-\d{8}T\d{6}Z-[0-9a-f]{6}", a)
    assert re.fullmatch(r"probe-\d{8}T\d{6}Z-[0-9a-f]{6}", b)
    assert a != b
    monkeypatch.delenv("WORKBENCH_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_store_path() == tmp_path / "runs" / "results.duckdb"
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "x.duckdb"))
    assert default_store_path() == tmp_path / "x.duckdb"


def test_current_git_sha(tmp_path):
    assert current_git_sha(tmp_path) is None  # not a git checkout
    sha = current_git_sha()
    assert sha is None or re.fullmatch(r"[0-9a-f]{4,40}", sha)
