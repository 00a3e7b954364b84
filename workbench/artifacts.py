"""Artifact folders: what recipes produce and the repo ships. Safetensors weights + JSON config + card + metrics.

Why folders and not single files: a card a person reads, metrics a test checks and weights a loader maps, kept
together and versioned together. Loading never unpickles: weights are safetensors.

Why writes are atomic, and how: `writing(folder)` hands out a hidden temporary sibling `.NAME.xxxxxxxx` holding a
`.workbench-writer.json` marker (pid, host, start time); on success the marker is removed and the folder is swapped
into place (Linux: one `renameat2(RENAME_EXCHANGE)`, so a reader sees the old artifact or the new one, never none;
elsewhere two renames, with the old one kept as `.NAME.old` until the new one is in place). Hidden folders are never
artifacts: `available`, `resolve` and the did-you-mean suggestions skip them, and a hidden path given explicitly is
refused in one line. A temporary folder left by a killed writer (its pid gone) is removed by the next write into the
same parent folder; one without a marker (older code) once it is an hour old.

Where shipped data lives (`data_root()`): `$WORKBENCH_DATA` if set; else the checkout (`artifacts/`, `probes/`,
`agents/`, `app/` next to the `workbench` package); else the copy packaged in the wheel (`workbench/_data`). Nothing
is written there except by `workbench train` into `artifacts_root()`; outputs go under the current directory.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError, unknown

KINDS = ("agents", "lms", "saes")
WEIGHTS, CONFIG, CARD, METRICS = "weights.safetensors", "config.json", "card.md", "metrics.json"
WRITER_MARKER = ".workbench-writer.json"
"""Inside a temporary artifact folder while it is being written: {"pid", "host", "started"}."""
DATA_ENV = "WORKBENCH_DATA"
_DATA_DIRS = ("artifacts", "probes", "agents", "app")
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}$")  # tempfile.mkdtemp(prefix=".NAME.")
_LEGACY_TMP_AGE_S = 3600  # a temporary folder without a marker (older code) is removed once this old
_STALE_TMP_AGE_S = 24 * 3600  # any temporary folder this old is removed, whoever wrote it
_SWAP_SETTLE_S = 10.0  # a `.NAME.old` younger than this may be a two-rename swap in progress: left alone


# ------------------------------------------------------------------------------------------------ locations


def _checkout_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _packaged_root() -> Path:
    return Path(__file__).resolve().parent / "_data"


def data_root() -> Path:
    """Where the shipped data (`artifacts/`, `probes/`, `agents/`, `app/`) lives; see the module docstring."""
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise WorkbenchError(f"{DATA_ENV}={env!r} is not a folder; point it at a folder holding artifacts/")
        return root
    checkout = _checkout_root()
    if (checkout / "artifacts").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout
    packaged = _packaged_root()
    return packaged if packaged.is_dir() else checkout


def repo_root() -> Path:
    """The shipped data folder (`data_root()`): the checkout in development, the packaged copy in a wheel install.
    Read from it; write outputs under the current directory instead."""
    return data_root()


def artifacts_root() -> Path:
    """`$WORKBENCH_ARTIFACTS` if set, else `data_root() / "artifacts"`."""
    return Path(os.environ.get("WORKBENCH_ARTIFACTS", data_root() / "artifacts"))


def is_installed_data(path: str | Path) -> bool:
    """Whether `path` lies inside the data packaged in an installed wheel (never to be written)."""
    packaged = _packaged_root()
    try:
        Path(path).resolve().relative_to(packaged)
    except ValueError:
        return False
    return packaged.is_dir()


def output_artifacts_root() -> Path:
    """Where a trainer writes new artifacts by default: `artifacts_root()`, unless that is the install folder of a
    wheel -- then one line asking for `--out` or `$WORKBENCH_ARTIFACTS` (nothing writes into the install folder)."""
    root = artifacts_root()
    if is_installed_data(root):
        raise WorkbenchError(
            f"the shipped artifacts ({root}) belong to the installed package; pass --out, or set "
            "WORKBENCH_ARTIFACTS to a folder of your own"
        )
    return root


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def available(kind: str = "agents") -> list[str]:
    """Names of the complete artifacts of one kind (a folder with a config; hidden temporary folders never count)."""
    folder = artifacts_root() / kind
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not _is_hidden(p.name) and (p / CONFIG).is_file())


def _refuse_temporary(path: Path) -> None:
    if _is_hidden(path.name) and path.name not in (".", ".."):
        raise WorkbenchError(
            f"{path} is a hidden temporary folder left by an interrupted artifact write, not an artifact; "
            "the next write into its parent folder removes it"
        )


def resolve(name_or_path: str | Path, kind: str = "agents") -> Path:
    """An artifact folder from a registered name (`maze-cheese-corner`) or a path; unknown -> nearest names."""
    path = Path(name_or_path)
    if path.is_dir():
        _refuse_temporary(path.resolve() if path.name in ("", ".", "..") else path)
        if not (path / CONFIG).is_file():
            raise WorkbenchError(f"{path} is not an artifact folder (no {CONFIG})")
        return path
    if _is_hidden(str(name_or_path)):
        _refuse_temporary(Path(str(name_or_path)))
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
        data = json.loads((folder / CONFIG).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"{folder / CONFIG}: unreadable artifact config ({err})") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{folder / CONFIG}: artifact config must be a JSON object, got {type(data).__name__}")
    return data


def read_metrics(folder: Path) -> dict:
    path = folder / METRICS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"{path}: unreadable artifact metrics ({err})") from None


# ------------------------------------------------------------------------------------------------ writing


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _is_stale(tmp: Path, now: float) -> bool:
    """A temporary artifact folder whose writer is gone (same host, pid dead) or that is simply too old."""
    try:
        age = now - tmp.stat().st_mtime
    except OSError:
        return False
    marker = tmp / WRITER_MARKER
    if not marker.is_file():
        return age > _LEGACY_TMP_AGE_S
    try:
        info = json.loads(marker.read_text())
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return age > _LEGACY_TMP_AGE_S
    if age > _STALE_TMP_AGE_S:
        return True
    return host == socket.gethostname() and not _pid_alive(pid)


def clean_stale(parent: Path) -> list[Path]:
    """Remove the temporary folders that killed writers left in `parent`, and finish an interrupted swap (a
    `.NAME.old` whose NAME is missing is put back). Returns the paths removed. Called by every `writing()`."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for child in parent.iterdir():
        name = child.name
        if not name.startswith(".") or not child.is_dir() or child.is_symlink():
            continue
        if name.endswith(".old") and len(name) > 5:
            target = parent / name[1:-4]
            try:
                settled = now - child.stat().st_ctime >= _SWAP_SETTLE_S  # not a swap in progress right now
            except OSError:
                continue
            if settled and not target.exists() and (child / CONFIG).is_file():
                child.rename(target)  # the swap was interrupted after moving the old artifact aside
            elif settled and target.exists():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
            continue
        if _TMP_RE.match(name) and _is_stale(child, now):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any:
    """libc's renameat2 (glibc >= 2.28), or None (not Linux, musl, or an old libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # the process's own libc: no library search
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextmanager
def writing(folder: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder next to `folder`; on success it replaces `folder` atomically, on error it is
    removed. Stale temporary folders of earlier, killed writers in the same parent are removed first."""
    folder = Path(folder)
    from workbench.validate import check_output_dir

    check_output_dir(folder.parent, name="artifact parent folder")
    if folder.exists() and not folder.is_dir():
        raise WorkbenchError(f"artifact folder {folder} is an existing file; choose another path")
    folder.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    marker = tmp / WRITER_MARKER
    marker.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    try:
        yield tmp
        marker.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists() and _exchange(tmp, folder):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous artifact
        return
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    """Strict JSON (NaN and infinities become null with a reason; see `workbench.validate.strict_json`)."""
    from workbench.validate import strict_json

    path.write_text(strict_json(data, indent=2) + "\n")
