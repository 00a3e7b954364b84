"""Installs anywhere: a wheel built from this tree, installed into a fresh venv, finds the shipped organisms, batteries
and app pages from any directory, runs a battery, and writes nothing into its install folder.

The fresh venv borrows the dependencies of the running interpreter through a .pth file (installing torch offline into
every test venv would take minutes); the workbench itself comes only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tree(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv with the wheel installed, its site-packages)."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the tree's files")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        path = ROOT / rel
        if path.is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / rel)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist")],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp / "dist").glob("goal_workbench-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True)
    return python, site


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_") and k != "PYTHONPATH"}
    env |= {"WORKBENCH_THREADS": "1", "WORKBENCH_STORE": str(cwd / "results.duckdb")}
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_wheel_ships_organisms_batteries_app_and_runs_a_battery_outside_the_checkout(installed, tmp_path):
    python, site = installed
    before = _tree(site / "workbench")
    probe = _run(
        python,
        tmp_path,
        "-c",
        "import workbench, workbench.artifacts as a\n"
        "print(workbench.__file__)\n"
        "print(a.data_root())\n"
        "print(','.join(a.available('agents')))\n"
        "print(','.join(a.available('lms')))\n"
        "print((a.repo_root() / 'app' / 'Home.py').is_file(), (a.repo_root() / 'probes' / 'maze.toml').is_file())\n",
    )
    assert probe.returncode == 0, probe.stderr
    module, data, agents, lms, found = probe.stdout.splitlines()
    assert module.startswith(str(site)) and data == str(site / "workbench" / "_data")
    assert {"maze-cheese-corner", "maze-cheese-anywhere", "coinrun-coin-at-exit"} <= set(agents.split(","))
    assert "persona-lm" in lms.split(",") and found == "True True"

    battery = tmp_path / "b.toml"
    battery.write_text(
        '[[check]]\nname = "installed organism plays"\nkind = "behaviour"\nsubject = "maze-cheese-corner"\n'
        'data = { split = "train", episodes = 8, seed = 0 }\nexpect = { cheese = ">= 0.0" }\n'
    )
    workbench = python.parent / "workbench"
    run = subprocess.run(
        [str(workbench), "battery", "run", str(battery), "--junit", str(tmp_path / "junit.xml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "WORKBENCH_THREADS": "1", "WORKBENCH_STORE": str(tmp_path / "results.duckdb")},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "junit.xml").is_file()

    refused = _run(python, tmp_path, "-c", "from workbench import artifacts; artifacts.output_artifacts_root()")
    assert refused.returncode != 0 and "belong to the installed package" in refused.stderr
    assert _tree(site / "workbench") == before  # nothing written into the install folder
