"""Deprecated: moved to `workbench.cli.lm` (the CLI is one package, `workbench/cli/`). Importing this module warns
and re-exports every name of the new one, so `from workbench.cli_lm import ...` keeps working."""

from __future__ import annotations

import warnings
from typing import Any

from workbench.cli import lm as _moved
from workbench.cli.lm import *  # noqa: F403

warnings.warn("workbench.cli_lm is deprecated; import workbench.cli.lm instead", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:  # private helpers too (`_row`, ...), as before the move
    return getattr(_moved, name)
