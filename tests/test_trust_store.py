"""The results store under concurrent writers and readers: no row is ever lost, readers never fail.

Two writer processes add rows in several rounds at the same time, while this process reads and compacts; afterwards
every row of every round is there exactly once. A writer killed mid-write leaves only a hidden temporary file that
readers ignore and the next write removes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from workbench import store as store_mod
from workbench.errors import WorkbenchError
from workbench.store import ResultStore, check_store_path, segments_dir

ROOT = Path(__file__).resolve().parent.parent

WRITER = r"""
import sys, time
from workbench.store import ResultStore
path, tag, rounds, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
for r in range(rounds):
    with ResultStore(path) as db:
        db.add([{"run_id": f"{tag}-{r}", "subject": tag, "metric": "m", "value": float(i), "seed": i,
                 "git_sha": None} for i in range(per)])
    time.sleep(0.01)
print("done", flush=True)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_two_writers_several_rounds_lose_nothing_while_reading_and_compacting(tmp_path):
    path = tmp_path / "runs" / "results.duckdb"
    rounds, per = 20, 7
    procs = [_spawn(WRITER, str(path), tag, str(rounds), str(per)) for tag in ("a", "b")]
    reads = compactions = 0
    seen_max = 0
    deadline = time.time() + 90
    try:
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            if path.exists():
                with ResultStore(path, read_only=True) as db:  # a reader while the writers run
                    n = len(db)
                    assert n >= seen_max  # rows only ever appear, complete
                    assert n % per == 0  # a reader sees a write completely or not at all
                    seen_max = n
                    reads += 1
                if reads % 5 == 0:
                    with ResultStore(path) as db:
                        db.compact()
                        compactions += 1
            time.sleep(0.02)
    finally:
        outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "done" in out
    with ResultStore(path, read_only=True) as db:
        df = db.query()
        runs = db.runs()
    assert len(df) == 2 * rounds * per
    assert sorted(runs["run_id"]) == sorted(f"{t}-{r}" for t in "ab" for r in range(rounds))
    assert set(runs["n_rows"]) == {per}
    for tag in "ab":  # each writer's rows in its write order
        mine = df[df.subject == tag]
        assert mine["run_id"].tolist() == [f"{tag}-{r}" for r in range(rounds) for _ in range(per)]
    assert reads > 0
    print(f"reads during writes: {reads}, compactions: {compactions}")
    # compacting everything keeps every row exactly once
    with ResultStore(path) as db:
        db.compact()
        assert len(db) == 2 * rounds * per
        assert db.query()["run_id"].tolist() == df["run_id"].tolist()
    assert not list(segments_dir(path).glob("*.parquet"))


KILLED = r"""
import os, sys, time
import pyarrow.parquet as pq
from workbench.store import ResultStore
real = pq.write_table
def slow(table, where, **kw):
    real(table, where, **kw)
    print("writing", flush=True)
    time.sleep(60)  # killed here: the temporary segment exists, the rename never happens
pq.write_table = slow
with ResultStore(sys.argv[1]) as db:
    db.add([{"run_id": "killed", "subject": "s", "metric": "m", "value": 1.0}])
"""


def test_writer_killed_mid_write_leaves_nothing_visible_and_is_cleaned(tmp_path):
    path = tmp_path / "results.duckdb"
    with ResultStore(path) as db:
        db.add([{"run_id": "kept", "subject": "s", "metric": "m", "value": 0.0}])
    proc = _spawn(KILLED, str(path))
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    seg = segments_dir(path)
    assert [p for p in seg.iterdir() if p.name.endswith(".tmp")]  # the half-written segment
    with ResultStore(path, read_only=True) as db:
        assert db.query()["run_id"].tolist() == ["kept"]
    with ResultStore(path) as db:
        db.add([{"run_id": "next", "subject": "s", "metric": "m", "value": 2.0}])
        assert db.query()["run_id"].tolist() == ["kept", "next"]
    assert not [p for p in seg.iterdir() if p.name.endswith(".tmp")]  # cleaned by the next write


def test_legacy_single_file_store_is_read_and_extended(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # a store written before segments: run_id, subject, metric, value only
    con.execute("CREATE TABLE results (run_id VARCHAR, subject VARCHAR, metric VARCHAR, value DOUBLE)")
    con.execute("INSERT INTO results VALUES ('old', 's', 'm', 1.5)")
    con.close()
    with ResultStore(path) as db:
        db.add([{"run_id": "new", "subject": "s", "metric": "m", "value": 2.5, "n": 3}])
        df = db.query()
        assert df["run_id"].tolist() == ["old", "new"]
        assert df["n"].isna().tolist() == [True, False]
        assert db.compact() == 1
        assert db.query()["run_id"].tolist() == ["old", "new"]
        # ad-hoc SQL over the same view
        assert db.con.execute("SELECT sum(value) FROM results").fetchone()[0] == pytest.approx(4.0)


def test_reader_works_while_another_process_holds_the_file_and_compact_waits_bounded(tmp_path, monkeypatch):
    path = tmp_path / "results.duckdb"
    with ResultStore(path) as db:
        db.add([{"run_id": "r", "subject": "s", "metric": "m", "value": 1.0}])
    holder = _spawn(
        "import sys, time, duckdb\n"
        "con = duckdb.connect(sys.argv[1], read_only=True)\nprint('held', flush=True)\ntime.sleep(30)\n",
        str(path),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(store_mod, "AUTO_COMPACT", 1)  # auto-compaction must not wait for the holder either
        t0 = time.monotonic()
        with ResultStore(path) as db:  # writers and readers do not wait for the holder
            db.add([{"run_id": "r2", "subject": "s", "metric": "m", "value": 1.0}])
            assert len(db) == 2
        assert time.monotonic() - t0 < 5
        assert len(list(segments_dir(path).glob("*.parquet"))) == 2  # not compacted: the file was busy
        monkeypatch.setenv("WORKBENCH_STORE_TIMEOUT", "0.3")
        with ResultStore(path) as db, pytest.raises(WorkbenchError, match="locked by another process") as err:
            db.compact()  # needs the write lock: bounded wait, then one line
        assert "\n" not in str(err.value)
    finally:
        holder.kill()
        holder.wait()


def test_strict_json_in_extra_and_bad_store_paths(tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as db:
        db.add([{"run_id": "r", "subject": "s", "metric": "m", "value": 1.0, "extra": {"x": float("nan")}}])
        extra = db.query()["extra"].iloc[0]
    assert json.loads(extra) == {"x": None, "null_reasons": {"x": json.loads(extra)["null_reasons"]["x"]}}
    json.loads(extra, parse_constant=lambda c: pytest.fail(f"bare {c} in stored JSON"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    for bad, pattern in [
        (blocker / "r.duckdb", "is a file, not a folder"),
        (tmp_path, "is a folder"),
    ]:
        with pytest.raises(WorkbenchError, match=pattern):
            check_store_path(bad)
        with pytest.raises(WorkbenchError, match=pattern):
            ResultStore(bad)
    with pytest.raises(WorkbenchError, match="is not a DuckDB results store"):
        ResultStore(blocker, read_only=True).query()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_add_compacts_automatically_once_segments_pile_up(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "AUTO_COMPACT", 4)
    path = tmp_path / "results.duckdb"
    for i in range(11):
        with ResultStore(path) as db:
            db.add([{"run_id": f"r{i}", "subject": "s", "metric": "m", "value": float(i), "git_sha": None}])
    assert len(list(segments_dir(path).glob("*.parquet"))) < 4
    with ResultStore(path, read_only=True) as db:
        assert db.query()["run_id"].tolist() == [f"r{i}" for i in range(11)]
