"""Packaging hook: the shipped data travels inside the wheel as `workbench/_data/{artifacts,probes,agents,app}`.

Why a hook and not `package-data`: the data lives at the top of the checkout (where people and the docs expect it),
outside the `workbench` package, and setuptools' package-data only reaches files inside a package. `build_py` copies
the four folders into the build tree; `workbench.artifacts.data_root()` finds them there in an installed wheel, the
checkout's own folders in development, or `$WORKBENCH_DATA` if set. MANIFEST.in puts them in the sdist. Everything
else (name, dependencies, entry point) is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("artifacts", "probes", "agents", "app")
_SKIP = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "*.ckpt")


class build_py_with_data(build_py):  # noqa: N801 - setuptools' command naming
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "workbench" / "_data"
        for name in DATA_DIRS:
            src = root / name
            if src.is_dir():
                shutil.copytree(src, target / name, ignore=_SKIP, dirs_exist_ok=True)


setup(cmdclass={"build_py": build_py_with_data})
