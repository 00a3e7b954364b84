"""CLI contracts: JSON shapes of eval/steer/probe, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_eval_json_contract(registry: Path, cli) -> None:
    code, out, err = cli("eval", "tiny-maze", "--split", "ood", "--episodes", "12", "--seed", "3", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["artifact"] == "tiny-maze" and obj["split"] == "ood" and obj["episodes"] == 12 and obj["seed"] == 3
    assert set(obj["rates"]) == {"cheese", "corner_first", "timeout"} == set(obj["ci95"])
    for key, (lo, hi) in obj["ci95"].items():
        assert 0.0 <= lo <= obj["rates"][key] <= hi <= 1.0
    # Same seed, same answer; a folder path works as well as a name.
    code2, out2, _ = cli(
        "eval", str(registry / "agents" / "tiny-maze"), "--split", "ood", "--episodes", "12", "--seed", "3", "--json"
    )
    assert code2 == 0 and json.loads(out2)["rates"] == obj["rates"]


def test_steer_json_contract(registry: Path, cli) -> None:
    code, out, err = cli(
        "steer",
        "tiny-maze",
        "--vector",
        "cheese",
        "--coef",
        "-1",
        "--layer",
        "embedder.block2.res1.resadd_out",
        "--split",
        "ood",
        "--episodes",
        "16",
        "--seed",
        "0",
        "--json",
    )
    assert code == 0, err
    obj = json.loads(out)
    for cond in ("baseline", "steered", "control"):
        assert set(obj[cond]["rates"]) == {"cheese", "corner_first", "timeout"}
        assert obj[cond]["n"] == 16
    assert set(obj["ci95"]) == {"baseline", "steered", "control"}
    assert set(obj["effects"]) == {"steered", "control"}
    lo, hi = obj["effects"]["steered"]["cheese"]["ci95"]
    assert lo <= obj["effects"]["steered"]["cheese"]["diff"] <= hi
    assert obj["vector_norm_mean"] > 0


def test_probe_json(registry: Path, cli) -> None:
    code, out, err = cli(
        "probe", "tiny-maze", "--layer", "embedder.block1.res1.resadd_out", "--n-fit", "40", "--n-test", "20", "--json"
    )
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert {r["test_split"] for r in rows} == {"train", "ood"} and rows[0]["grid"] == "15x15"


def test_vector_field_png(registry: Path, cli, tmp_path: Path) -> None:
    png = tmp_path / "vf.png"
    code, out, err = cli("vector-field", "tiny-maze", "--out", str(png), "--seed", "4", "--coef", "-1")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_one_line_exit_2(registry: Path, cli) -> None:
    cases = [
        (("eval", "tiny-maz", "--json"), "unknown artifact 'tiny-maz'; did you mean: tiny-maze"),
        (("eval", "tiny-maze", "--split", "oood"), "unknown split 'oood'; did you mean: ood"),
        (
            ("steer", "tiny-maze", "--layer", "embedder.block2.res1.resad_out"),
            "unknown hook 'embedder.block2.res1.resad_out'; did you mean: embedder.block2.res1.resadd_out",
        ),
        (("steer", "tiny-maze", "--vector", "chese"), "unknown vector 'chese'; did you mean: cheese"),
        (("train", "agents/nope.toml"), "does not exist"),
    ]
    for args, message in cases:
        code, out, err = cli(*args)
        assert code == 2, (args, code, err)
        assert err.strip().count("\n") == 0 and message in err, (args, err)
        assert "Traceback" not in err


def test_console_script_exit_code_without_traceback(registry: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "eval", "no-such-agent"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown artifact") and "Traceback" not in proc.stderr


def test_steer_with_a_probe_direction(registry: Path, cli) -> None:
    code, out, err = cli(
        "steer",
        "tiny-maze",
        "--vector",
        "probe",
        "--layer",
        "embedder.fc",
        "--coef",
        "2",
        "--probe-target",
        "cheese_in_region",
        "--probe-episodes",
        "40",
        "--episodes",
        "12",
        "--json",
    )
    assert code == 0, err
    obj = json.loads(out)
    assert obj["probe"] == {"target": "cheese_in_region", "method": "mass_mean", "episodes": 40}
    assert obj["vector_norm_mean"] > 0 and set(obj["effects"]) == {"steered", "control"}
    code, _, err = cli("steer", "tiny-maze", "--vector", "probe", "--probe-method", "lda")
    assert code == 2 and "unknown probe method 'lda'" in err


# ------------------------------------------------------------------------------------- the package and its options
def test_cli_is_one_package_with_register_hooks() -> None:
    import importlib

    import workbench.cli as cli_pkg

    for name in cli_pkg.GROUPS:
        assert callable(importlib.import_module(name).register)
    import typer

    names = set(typer.main.get_command(cli_pkg.app).commands)
    assert {
        "train", "eval", "steer", "probe", "hooks", "vector-field", "collect", "kinds", "demo", "results", "app",
        "patch", "lm", "sae", "battery",
    } <= names  # fmt: skip


def test_old_module_paths_warn_and_reexport() -> None:
    import importlib
    import warnings

    for old, new, attr in (
        ("workbench.cli_lm", "workbench.cli.lm", "lm_app"),
        ("workbench.cli_sae", "workbench.cli.sae", "sae_app"),
        ("workbench.cli_patch", "workbench.cli.patch", "persona_pairs"),
    ):
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mod = importlib.import_module(old)
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
        assert getattr(mod, attr) is getattr(importlib.import_module(new), attr)
    from workbench.cli_patch import pairs_study  # the notebook's import keeps working

    assert callable(pairs_study)


def test_dump_is_strict_json(capsys) -> None:
    from workbench.cli.options import dump

    dump({"rate": float("nan"), "ci95": [0.1, float("inf")], "n": 3})
    obj = json.loads(capsys.readouterr().out)
    assert obj["rate"] is None and obj["ci95"] == [0.1, None] and set(obj["null_reasons"]) == {"rate", "ci95[1]"}


def _store_rows() -> list[dict]:
    import os

    from workbench.store import ResultStore

    with ResultStore(os.environ["WORKBENCH_STORE"], read_only=True) as db:
        return db.query().to_dict("records")


def test_measuring_verbs_record_rows(registry: Path, cli, tmp_path: Path) -> None:
    code, _, err = cli("eval", "tiny-maze", "--episodes", "6", "--seed", "2", "--split", "train")
    assert code == 0, err
    rows = _store_rows()
    assert {r["metric"] for r in rows} >= {"rate.cheese", "rate.corner_first", "rate.timeout"}
    cheese = next(r for r in rows if r["metric"] == "rate.cheese")
    assert cheese["subject"] == "tiny-maze" and cheese["split"] == "train" and cheese["seed"] == 2
    assert cheese["n"] == 6 and cheese["ci_low"] <= cheese["value"] <= cheese["ci_high"]
    assert cheese["intervention"] == "none" and cheese["run_id"].startswith("eval-")

    code, _, err = cli("steer", "tiny-maze", "--episodes", "4", "--coef", "-2")
    assert code == 0, err
    steer = [r for r in _store_rows() if r["run_id"].startswith("steer-")]
    kinds = {r["intervention"] for r in steer}
    assert "none" in kinds and any(k.startswith("cheese x-2") for k in kinds) and any("random" in k for k in kinds)
    assert {"effect.cheese", "decision_square.p_goal"} <= {r["metric"] for r in steer}

    code, _, err = cli(
        "probe", "tiny-maze", "--layer", "embedder.block1.res1.resadd_out", "--n-fit", "20", "--n-test", "10"
    )
    assert code == 0, err
    probes = [r for r in _store_rows() if r["run_id"].startswith("probe-")]
    assert {r["split"] for r in probes} == {"train", "ood"}
    assert all(r["metric"] == "probe.cheese_top1.embedder.block1.res1.resadd_out" and r["n"] == 10 for r in probes)

    code, _, err = cli(
        "collect", "tiny-maze", "--hook", "embedder.fc", "--episodes", "3", "--out", str(tmp_path / "ds")
    )
    assert code == 0, err
    (row,) = [r for r in _store_rows() if r["run_id"].startswith("collect-")]
    assert row["metric"] == "collect.rows" and row["value"] == 3 and json.loads(row["extra"])["out"].endswith("ds")


def test_hooks_and_vector_field_record_nothing(registry: Path, cli, tmp_path: Path) -> None:
    import os

    assert cli("hooks", "tiny-maze")[0] == 0
    code, _, err = cli("vector-field", "tiny-maze", "--out", str(tmp_path / "new" / "vf.png"))
    assert code == 0, err and (tmp_path / "new" / "vf.png").is_file()
    assert not Path(os.environ["WORKBENCH_STORE"]).exists()


def test_rows_of_other_shapes() -> None:
    import pandas as pd

    from workbench.cli.rows import flat_rows, patch_rows

    fid = {
        "episodes": 5,
        "ood": {"original": {"cheese": {"rate": 0.4, "ci95": [0.1, 0.7], "n": 5}}, "return_recovered": 0.5},
    }
    rows = flat_rows({"fidelity": fid, "reconstruction": {"l0": 3.0}}, "r", subject="s", prefix="sae.")
    by = {r["metric"]: r for r in rows}
    assert by["sae.fidelity.ood.original.cheese"]["ci_low"] == 0.1 and by["sae.fidelity.ood.original.cheese"]["n"] == 5
    assert by["sae.fidelity.ood.original.cheese"]["split"] == "ood" and by["sae.reconstruction.l0"]["value"] == 3.0
    frame = pd.DataFrame(
        {"activation": ["resid_pre"], "mode": ["noising"], "layer": [1], "pos": [4], "effect": [0.25],
         "ci_low": [float("nan")], "ci_high": [float("nan")], "n": [8]}
    )  # fmt: skip
    rows = patch_rows(frame, "r", subject="lm", seed=0, means={"noising/clean": 1.5})
    assert (
        rows[0]["metric"] == "patch.logit_diff.noising/clean"
        and rows[1]["intervention"] == "noising patch resid_pre layer1 pos4"
    )
    assert rows[1]["value"] == 0.25 and rows[1]["n"] == 8


def test_app_refuses_remote_without_flag_and_warns_with_it(cli, monkeypatch) -> None:
    from workbench.cli import agents

    seen = {}

    def fake_child(cmd, *, env=None, grace_s=10.0):
        seen["cmd"] = cmd
        return 0

    monkeypatch.setattr(agents, "run_child", fake_child)
    code, _, err = cli("app", "--address", "0.0.0.0")
    assert code == 2 and "--allow-remote" in err and "cmd" not in seen
    code, _, err = cli("app", "--address", "0.0.0.0", "--allow-remote", "--port", "8611")
    assert code == 0 and err.startswith("warning: serving the app on 0.0.0.0:8611")
    assert seen["cmd"][seen["cmd"].index("--server.address") + 1] == "0.0.0.0"
    assert seen["cmd"][seen["cmd"].index("--browser.gatherUsageStats") + 1] == "false"
    code, _, err = cli("app")
    assert code == 0 and err == ""


def test_app_forwards_sigterm_to_its_child(tmp_path: Path) -> None:
    """SIGTERM to the `workbench app` process stops the server it started (run_child forwards it and waits)."""
    import os
    import signal
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = (
        "import sys; from workbench.cli.agents import run_child; "
        f"sys.exit(run_child([sys.executable, '-c', {child!r}]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child_pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        time.sleep(0.2)
        try:
            os.kill(child_pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive, "the child outlived the parent"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_hidden_folders_are_never_saes_or_artifacts(registry: Path, cli) -> None:
    import shutil

    from workbench.sae.train import available_saes

    (registry / "saes" / ".half.1234").mkdir(parents=True)
    (registry / "saes" / ".half.1234" / "cfg.json").write_text("{}")
    assert available_saes() == []
    hidden = registry / "agents" / ".tiny-maze.9f9f"
    shutil.copytree(registry / "agents" / "tiny-maze", hidden)
    code, _, err = cli("hooks", str(hidden))
    assert code == 2 and "hidden temporary folder" in err and err.count("\n") == 1


def test_sae_work_folder_is_under_the_current_directory(registry: Path, tmp_path: Path, monkeypatch) -> None:
    """`sae train` collects into ./runs/sae (never into the install folder)."""
    import workbench.sae.artifact as art
    from workbench.sae.train import SAESpec

    class Stop(Exception):
        pass

    class FakeSubject:
        name = "fake"

        def check_hook(self, hook):
            return None

        def collect(self, hooks, n, seed, out=None, progress=True):
            raise Stop(out)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(art, "load_subject", lambda *a, **k: FakeSubject())
    try:
        art.build_sae_artifact("fake", "h", SAESpec(width=8, k=2, tokens=64, batch_size=8))
    except Stop as stop:
        assert Path(stop.args[0]).parent == tmp_path / "runs" / "sae"
    else:
        raise AssertionError("collect was not reached")
