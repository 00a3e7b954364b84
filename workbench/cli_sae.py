"""Deprecated: moved to `workbench.cli.sae` (the CLI is one package, `workbench/cli/`). Importing this module warns
and re-exports every name of the new one, so `from workbench.cli_sae import ...` keeps working."""

from __future__ import annotations

import warnings
from typing import Any

from workbench.cli import sae as _moved
from workbench.cli.sae import *  # noqa: F403

warnings.warn("workbench.cli_sae is deprecated; import workbench.cli.sae instead", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:  # private helpers too (`_row`, ...), as before the move
    return getattr(_moved, name)
