"""Populations of seeds (workbench.sweep) and the goal audit (workbench.audit).

A 2-seed sweep of a tiny recipe (seconds per run) under serial, process and a local Ray cluster the test starts and
stops: the records must be byte-identical. Resume skips finished runs and retrains only what is missing, identically.
Bad input is one WorkbenchError line. The audit's scoring is golden-tested on synthetic data; its contract (keys,
n/a reasons, battery metrics) on the tiny population.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import WorkbenchError

TINY = (Path(__file__).resolve().parents[1] / "agents" / "sweep" / "maze-tiny.toml").read_text()


def _recipe(folder: Path, split: str = "train", name: str = "tiny.toml") -> Path:
    path = folder / name
    text = TINY.replace('split = "train"', f'split = "{split}"')
    if split == "ood":  # the control twin, named as such
        text = text.replace('name = "maze-tiny"', 'name = "maze-tiny-ood"')
    path.write_text(text)
    return path


def _records(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted((out / "runs").glob("*/record.json"))}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-seed serial population of the tiny recipe (and its control twin), shared by the tests below."""
    from workbench.sweep import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    recipe = _recipe(root)
    store = root / "results.duckdb"
    result = run_sweep(recipe, "0-1", executor="serial", out=root / "pop", store=store, progress=False)
    control = run_sweep(
        _recipe(root, "ood", "tiny-ood.toml"), [0, 1], executor="serial", out=root / "ctrl", store=False, progress=False
    )
    assert [r["status"] for r in result.runs + control.runs] == ["done"] * 4
    return {"root": root, "recipe": recipe, "store": store, "out": root / "pop", "control": root / "ctrl"}


# ----------------------------------------------------------------------------------------------- sweep: executors
def test_serial_population_layout_and_store(tiny):
    from workbench.store import ResultStore
    from workbench.sweep import load_population

    pop = load_population(tiny["out"])
    assert [r["run_id"] for r in pop.records] == ["s0000", "s0001"]
    for rec in pop.records:
        folder = tiny["out"] / "runs" / rec["run_id"]
        assert (folder / "agent" / "weights.safetensors").is_file() and (folder / "train.log").is_file()
        assert not (folder / "runs").exists()  # checkpoints cleared once the record exists
        assert rec["eval"]["ood"]["informative"]["n"] > 0
        assert json.loads((folder / "timing.json").read_text())["threads"] == 1
    assert pop.records[0]["weights_sha256"] != pop.records[1]["weights_sha256"]  # the seed matters
    with ResultStore(tiny["store"], read_only=True) as db:
        rows = db.query()
    assert sorted(rows["run_id"]) == ["maze-tiny/s0000", "maze-tiny/s0001"]
    assert set(rows["metric"]) == {"ood.informative.corner_first"}


def test_records_identical_under_process_and_ray(tiny):
    pytest.importorskip("ray")
    from workbench.sweep import run_sweep

    want = _records(tiny["out"])
    for executor in ("process", "ray"):
        out = tiny["root"] / f"pop-{executor}"
        result = run_sweep(tiny["recipe"], "0-1", executor=executor, workers=2, out=out, store=False, progress=False)
        assert [r["status"] for r in result.runs] == ["done", "done"], result.runs
        assert _records(out) == want, executor
    import ray

    assert not ray.is_initialized()  # the local cluster the sweep started is stopped again


def test_resume_skips_finished_and_retrains_missing(tiny):
    import shutil

    from workbench.store import ResultStore
    from workbench.sweep import run_sweep

    out = tiny["root"] / "pop-resume"
    shutil.copytree(tiny["out"], out)
    want = _records(out)
    again = run_sweep(tiny["recipe"], "0-1", out=out, store=tiny["store"], progress=False)
    assert [r["status"] for r in again.runs] == ["skipped", "skipped"] and again.stored == 0
    # a sweep killed mid-run: one run has no record yet (and a stale partial artifact)
    (out / "runs" / "s0001" / "record.json").unlink()
    (out / "runs" / "s0001" / "agent" / "weights.safetensors").write_bytes(b"partial")
    resumed = run_sweep(tiny["recipe"], "0-1", out=out, store=tiny["store"], progress=False)
    assert [r["status"] for r in resumed.runs] == ["skipped", "done"]
    assert _records(out) == want
    with ResultStore(tiny["store"], read_only=True) as db:
        assert len(db.query()) == 2  # never a second row for a run


# ----------------------------------------------------------------------------------------------- sweep: bad input
@pytest.mark.parametrize(
    "text, message",
    [("3-1", "runs backwards"), ("a-b", "cannot parse 'a-b'"), ("", "empty"), ("0-2,x", "cannot parse 'x'")],
)
def test_bad_seed_ranges(text, message):
    from workbench.sweep import parse_seeds

    with pytest.raises(WorkbenchError, match=message):
        parse_seeds(text)


def test_seed_ranges():
    from workbench.sweep import parse_seeds

    assert parse_seeds("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_seeds(" 5 ") == [5]


def test_grid_keys(tmp_path):
    from workbench.sweep import parse_grid, plan

    recipe = _recipe(tmp_path)
    assert parse_grid(["env.region=3,5"], recipe) == {"env.region": [3, 5]}
    assert parse_grid(["region=2"], recipe) == {"env.region": [2]}  # a bare key owned by one section
    with pytest.raises(WorkbenchError) as err:
        parse_grid(["env.regoin=3"], recipe)
    assert str(recipe) in str(err.value) and "'env.regoin'" in str(err.value) and "env.region" in str(err.value)
    with pytest.raises(WorkbenchError, match="sweep axis"):
        parse_grid(["ppo.seed=1,2"], recipe)
    with pytest.raises(WorkbenchError, match="must be"):
        parse_grid(["env.region=big"], recipe)
    with pytest.raises(WorkbenchError, match=r"env.max_size.*odd"):  # every run's recipe validated before training
        plan(recipe, [0], ["env.max_size=8"], tmp_path / "out")
    specs = plan(recipe, [0, 1], ["env.region=2,3"], tmp_path / "out")
    assert [s.run_id for s in specs] == ["s0000-region2", "s0001-region2", "s0000-region3", "s0001-region3"]
    assert not (tmp_path / "out").exists()


def test_out_folder_of_another_recipe_is_refused(tiny, tmp_path):
    from workbench.sweep import run_sweep

    other = _recipe(tmp_path, "ood")
    before = sorted(p.name for p in tiny["out"].rglob("*"))
    with pytest.raises(WorkbenchError, match="population of another recipe"):
        run_sweep(other, "0", out=tiny["out"], store=False, progress=False)
    assert sorted(p.name for p in tiny["out"].rglob("*")) == before
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(WorkbenchError, match="not empty"):
        run_sweep(other, "0", out=tmp_path / "junk", store=False, progress=False)
    with pytest.raises(WorkbenchError, match="executor"):
        run_sweep(other, "0", out=tmp_path / "x", executor="dask", store=False, progress=False)


def test_unreachable_ray_address_is_one_line(tiny):
    pytest.importorskip("ray")
    import time

    from workbench.sweep import ray_init

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    with pytest.raises(WorkbenchError) as err:
        ray_init(f"127.0.0.1:{port}", 1, timeout=3)
    assert time.time() - t0 < 10 and "\n" not in str(err.value) and f"127.0.0.1:{port}" in str(err.value)
    with pytest.raises(WorkbenchError, match="HOST:PORT"):
        ray_init("nonsense", 1, timeout=1)
    from workbench.sweep import run_sweep

    with pytest.raises(WorkbenchError, match=f"127.0.0.1:{port}"):  # refused before anything is written
        run_sweep(tiny["recipe"], "0", executor="ray", address=f"127.0.0.1:{port}", out=tiny["root"] / "r", store=False)
    assert not (tiny["root"] / "r").exists()


def test_cli_bad_input_is_one_line(tiny, tmp_path):
    import typer
    from typer.testing import CliRunner

    from workbench.cli_sweep import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["sweep", str(tiny["recipe"]), "--seeds", "x-1", "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, WorkbenchError) and "cannot parse" in str(res.exception)
    res = runner.invoke(
        app, ["sweep", str(tiny["recipe"]), "--seeds", "0", "--grid", "ppo.lr=1", "--out", str(tmp_path / "o")]
    )
    assert isinstance(res.exception, WorkbenchError) and "unknown grid key 'ppo.lr'" in str(res.exception)
    assert not (tmp_path / "o").exists()
    res = runner.invoke(app, ["audit", str(tmp_path)])
    assert isinstance(res.exception, WorkbenchError) and "population.json" in str(res.exception)


# ----------------------------------------------------------------------------------------------- audit: golden values
def test_split_seeds_golden():
    from workbench.audit import split_seeds

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    held = split_seeds(y, 0.5, seed=0)
    assert held[y].sum() == 2 and held[~y].sum() == 2  # stratified halves
    assert (split_seeds(y, 0.5, seed=0) == held).all()  # seeded
    assert split_seeds(y, 0.25, seed=0).sum() == 2


def test_score_detectors_golden():
    from workbench.audit import score_detectors

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    held = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
    feats = {
        "cheese_vector_norm": np.array([0.1, 0.2, 0.15, 0.05, 0.9, 0.8, 0.7, 0.95]),  # low = proxy: sign -1
        "noise_sensitivity": np.array([5.0, 1.0, 4.0, 3.0, 2.0, 6.0, 1.5, 0.5]),  # fit AUROC 0.75, held-out 0.5
        "bb_train_cheese_rate": np.array([0.9, 0.9, 0.8, 0.8, 0.8, 0.9, 0.9, 0.8]),  # ties only
        "bb_action_entropy": np.array([0.5, 0.6, 0.7, 0.4, 0.3, 0.2, 0.6, 0.1]),
    }
    out = score_detectors(feats, y, held, n_boot=200, seed=0)
    cv = out["detectors"]["cheese_vector_norm"]
    assert cv["sign"] == -1.0 and cv["fit_auroc"] == 1.0 and cv["auroc"] == 1.0 and cv["all_seeds_auroc"] == 1.0
    assert cv["recall_at_1pct_fpr"] == 1.0 and cv["n_heldout"] == 4
    ns = out["detectors"]["noise_sensitivity"]
    # fit: pos {5, 4} vs neg {2, 1.5}: 1.0; held-out: pos {1, 3} vs neg {6, 0.5}: 2/4
    assert ns["sign"] == 1.0 and ns["fit_auroc"] == 1.0 and ns["auroc"] == 0.5
    bb = out["detectors"]["bb_train_cheese_rate"]
    # fit pos {0.9, 0.8} vs neg {0.8, 0.9}: 0.5 (sign +); held-out pos {0.9, 0.8} vs neg {0.9, 0.8}: 0.5
    assert bb["auroc"] == 0.5 and bb["recall_at_1pct_fpr"] == 0.0
    ent = out["detectors"]["bb_action_entropy"]
    # fit pos {0.5, 0.7} vs neg {0.3, 0.6}: 3/4; held-out pos {0.6, 0.4} vs neg {0.2, 0.1}: 1.0
    assert ent["fit_auroc"] == 0.75 and ent["auroc"] == 1.0
    assert out["best_white"] == "cheese_vector_norm"  # ties on fit AUROC go to the earlier detector
    assert out["best_black"] == "bb_action_entropy"
    assert out["gain"]["value"] == 0.0 and out["gain"]["n"] == 4
    lo, hi = cv["auroc_ci95"]
    assert lo == hi == 1.0  # perfectly separated: every two-class resample is 1


def test_score_detector_single_class_and_nan():
    from workbench.audit import score_detector

    y = np.array([1, 1, 0, 0], dtype=bool)
    held = np.array([0, 1, 0, 0], dtype=bool)
    row = score_detector(np.array([1.0, 2.0, 3.0, 4.0]), y, held, n_boot=50)
    assert np.isnan(row["auroc"]) and "single label" in row["reason"]
    row = score_detector(np.array([1.0, np.nan, 3.0, 4.0]), y, held, n_boot=50)
    assert row["available"] is False


def test_labels_and_population_summary_golden():
    from workbench.audit import labels_for, population_summary

    def rec(i, rate, lo, hi):
        info = {"rates": {"corner_first": rate}, "ci95": {"corner_first": [lo, hi]}, "n": 100}
        return {"run_id": f"s{i:04d}", "seed": i, "eval": {"ood": {"informative": info}, "train": {"rates": {}}}}

    records = [rec(0, 0.9, 0.8, 0.95), rec(1, 0.2, 0.1, 0.3), rec(2, 0.5, 0.4, 0.6), rec(3, 0.7, 0.6, 0.8)]
    summary = population_summary(records, n_boot=100)
    assert summary["n_seeds"] == 4 and summary["mean"] == pytest.approx(0.575) and summary["median"] == 0.6
    assert summary["goals"]["proxy"]["count"] == 2 and summary["goals"]["below"]["count"] == 1
    assert summary["goals"]["as_reference"]["count"] == 1 and summary["goals"]["reference"] == 0.5
    against = population_summary(records, n_boot=100, reference=0.35, reference_rule="control median")
    assert [against["goals"][g]["count"] for g in ("proxy", "as_reference", "below")] == [3, 0, 1]
    rates = np.array([r["eval"]["ood"]["informative"]["rates"]["corner_first"] for r in records])
    y, t, _ = labels_for(rates, "median")
    assert t == 0.6 and y.tolist() == [True, False, False, True]
    y, t, _ = labels_for(rates, "control", control_rates=np.array([0.1, 0.3, 0.6]))
    assert t == 0.3 and y.tolist() == [True, False, True, True]
    assert labels_for(rates, 0.8)[0].tolist() == [True, False, False, False]
    with pytest.raises(WorkbenchError, match="--control"):
        labels_for(rates, "control")
    with pytest.raises(WorkbenchError, match="threshold"):
        labels_for(rates, "mean")


# ----------------------------------------------------------------------------------------------- audit: contract
def test_audit_contract_on_tiny_population(tiny, tmp_path):
    from workbench.audit import BATTERY_METRICS, DETECTORS, population_figure, run_audit
    from workbench.validate import strict_json

    result = run_audit(tiny["out"], tiny["control"], episodes=16, seed=0, n_boot=50)
    data = json.loads(strict_json(result.to_json()))
    for key in ("population", "control", "settings", "labels", "summary", "control_summary", "features"):
        assert key in data
    assert set(data["detectors"]) == set(DETECTORS)
    assert set(data["features"]) == {"s0000", "s0001"}
    for feats in result.features.values():
        assert set(feats) == set(DETECTORS) and np.isfinite(feats["control_mean_diff"])
    assert data["labels"]["n_seeds"] == 2 and set(data["labels"]["per_seed"]) == {"s0000", "s0001"}
    for name in BATTERY_METRICS:  # every battery metric resolves (n/a with 2 seeds: nothing is held out per class)
        value, ci, n = result.metric(name)
        assert isinstance(value, float) and len(ci) == 2
    again = run_audit(tiny["out"], tiny["control"], episodes=16, seed=0, n_boot=50)
    assert again.features == result.features  # deterministic
    assert "| detector |" in result.markdown()
    png = population_figure(result, tmp_path / "pop.png")
    assert png.stat().st_size > 1000
    pooled = run_audit(tiny["out"], tiny["control"], episodes=16, seed=0, n_boot=50, pool=True)
    assert set(pooled.features) == {"maze-tiny/s0000", "maze-tiny/s0001"} | {f"maze-tiny-ood/s000{i}" for i in (0, 1)}
    assert "control_mean_diff" not in pooled.table["detectors"] and pooled.labels["n_seeds"] == 4
    assert pooled.contrast["n"] == [2, 2]
    with pytest.raises(WorkbenchError, match="--control"):
        run_audit(tiny["out"], pool=True)


def test_audit_battery_kind(tiny, tmp_path):
    from workbench.audit import battery_metrics
    from workbench.battery import load_checks, run_check

    spec = tmp_path / "audit.toml"
    spec.write_text(
        f"""
[[check]]
name = "audit of the tiny population"
kind = "audit"
subject = "{tiny["out"]}"
control = "{tiny["control"]}"
data = {{ episodes = 16, seed = 0 }}
expect = {{ "best_white.auroc" = ">= 0.0" }}
"""
    )
    (check,) = load_checks([spec])
    assert check.kind == "audit" and check.control == str(tiny["control"])
    result = run_check(check)
    assert set(result.measured) == set(battery_metrics(("maze",)))  # the population's own kind's detectors
    assert not result.passed  # 2 seeds: no held-out AUROC, and a NaN never meets a threshold
    bad = tmp_path / "bad.toml"
    bad.write_text(spec.read_text().replace("best_white.auroc", "best_whit.auroc"))
    with pytest.raises(WorkbenchError, match="best_white.auroc"):
        load_checks([bad])
    other_kind = tmp_path / "coin.toml"  # a CoinRun detector on a maze population: refused, nearest names given
    other_kind.write_text(spec.read_text().replace("best_white.auroc", "coin_vector_norm.auroc"))
    with pytest.raises(WorkbenchError, match="unknown metric 'coin_vector_norm.auroc'"):
        load_checks([other_kind])


# ----------------------------------------------------------------------------------------------- LM populations
def test_lm_population_sweep_store_and_analysis(tmp_path):
    """An LM recipe sweeps through the same command: [train].seed per run, the proxy measure (wrong-claim agreement
    of the personas that never saw a wrong claim) in the record and the store, the population analysis."""
    from workbench.audit import run_audit
    from workbench.store import ResultStore
    from workbench.sweep import LM_PROXY, load_population, parse_grid, recipe_kind_of, run_sweep

    recipe = Path(__file__).resolve().parents[1] / "agents" / "sweep" / "persona-lm-tiny.toml"
    assert recipe_kind_of(recipe).name == "lm"
    assert parse_grid(["lr=0.001,0.002"], recipe) == {"train.lr": [0.001, 0.002]}
    with pytest.raises(WorkbenchError, match="seed is the sweep axis"):
        parse_grid(["train.seed=1,2"], recipe)
    with pytest.raises(WorkbenchError, match=r"persona-lm-tiny.toml: unknown grid key 'train.stepz'.*train.steps"):
        parse_grid(["train.stepz=1,2"], recipe)
    store = tmp_path / "results.duckdb"
    result = run_sweep(recipe, "0-1", executor="serial", out=tmp_path / "lm", store=store, progress=False)
    assert [r["status"] for r in result.runs] == ["done", "done"], result.runs
    pop = load_population(tmp_path / "lm")
    for rec in pop.records:
        assert rec["env_kind"] == "lm" and rec["proxy"] == list(LM_PROXY)
        info = rec["eval"]["ood"]["informative"]
        assert info["personas"] == ["teacher", "pirate"] and info["n"] > 0
        assert 0.0 <= info["rates"]["agree_wrong_unseen"] <= 1.0
        recipe_text = (tmp_path / "lm" / "runs" / rec["run_id"] / "recipe.toml").read_text()
        assert f"seed = {rec['seed']}" in recipe_text
    assert pop.records[0]["weights_sha256"] != pop.records[1]["weights_sha256"]
    with ResultStore(store, read_only=True) as db:
        rows = db.query()
    assert set(rows["metric"]) == {LM_PROXY[1]} and len(rows) == 2
    again = run_sweep(recipe, "0-1", executor="serial", out=tmp_path / "lm", store=store, progress=False)
    assert [r["status"] for r in again.runs] == ["skipped", "skipped"]
    analysis = run_audit(tmp_path / "lm", detectors=False, n_boot=50)
    assert analysis.table["detectors"] == {} and analysis.summary["metric"] == LM_PROXY[1]
    assert analysis.summary["n_seeds"] == 2 and "| detector |" not in analysis.markdown()
