"""One error type for bad input, so the CLI can print one line and exit 2.

Why a single class: every user-facing mistake (unknown artifact, hook, split, recipe key) should read the same way,
name the problem, and suggest the nearest valid choice. Library callers catch `WorkbenchError`; the CLI turns it into
`error: ...` on stderr with exit code 2 and no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WorkbenchError(ValueError):
    """Bad input from the user: the message is one line and says what to do."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The `n` valid choices nearest to `name` (by difflib ratio), best first."""
    choices = list(choices)
    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.4)
    if not hits:  # fall back on substring matches so `res1` still suggests `embedder.block2.res1.resadd_out`
        hits = [c for c in choices if name.split(".")[-1] in c][:n]
    return hits


def unknown(kind: str, name: str, choices: Iterable[str]) -> WorkbenchError:
    """`unknown hook 'x'; did you mean: a, b?` -- the standard shape of a lookup failure."""
    choices = list(choices)
    hits = closest(name, choices)
    if hits:
        return WorkbenchError(f"unknown {kind} {name!r}; did you mean: {', '.join(hits)}?")
    shown = ", ".join(sorted(choices)[:8]) + (" ..." if len(choices) > 8 else "")
    return WorkbenchError(f"unknown {kind} {name!r}; valid: {shown}")
