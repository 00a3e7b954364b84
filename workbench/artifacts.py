"""Artifact folders: what recipes produce and the repo ships. Safetensors weights + JSON config + card + metrics.

Why folders and not single files: a card a person reads, metrics a test checks and weights a loader maps, kept
together and versioned together. Loading never unpickles: weights are safetensors. Writing goes to a temporary
sibling folder that is renamed into place at the end, so a crash never leaves a half-written artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.errors import WorkbenchError, unknown

KINDS = ("agents", "lms", "saes")
WEIGHTS, CONFIG, CARD, METRICS = "weights.safetensors", "config.json", "card.md", "metrics.json"


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def artifacts_root() -> Path:
    """`$WORKBENCH_ARTIFACTS` if set, else the repo's `artifacts/` folder."""
    return Path(os.environ.get("WORKBENCH_ARTIFACTS", repo_root() / "artifacts"))


def available(kind: str = "agents") -> list[str]:
    """Names of the artifacts of one kind that have a config (complete artifacts only)."""
    folder = artifacts_root() / kind
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / CONFIG).is_file())


def resolve(name_or_path: str | Path, kind: str = "agents") -> Path:
    """An artifact folder from a registered name (`maze-cheese-corner`) or a path; unknown -> nearest names."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise WorkbenchError(f"{path} is not an artifact folder (no {CONFIG})")
        return path
    candidate = artifacts_root() / kind / str(name_or_path)
    if (candidate / CONFIG).is_file():
        return candidate
    names = available(kind)
    if not names:
        raise WorkbenchError(
            f"unknown artifact {str(name_or_path)!r}: no {kind} artifacts in {artifacts_root() / kind}"
        )
    raise unknown("artifact", str(name_or_path), names)


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"{folder / CONFIG}: unreadable artifact config ({err})") from None


def read_metrics(folder: Path) -> dict:
    path = folder / METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


@contextmanager
def writing(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder next to `folder`; on success it replaces `folder` atomically, on error it is removed."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
