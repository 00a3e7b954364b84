"""The `workbench` command line: one Typer app, one module per command group, shared options.

Layout: `options.py` (the options several commands share, each validated as it is parsed), `rows.py` (results-store
rows of the measuring commands), and one module per group -- `agents` (train, eval, steer, probe, hooks,
vector-field, collect, kinds, demo, results, app), `battery`, `lm`, `patch`, `sae`. Each group module has
`register(app)`, which adds its commands; `GROUPS` below lists them in help order.

New command group: a module `workbench/cli/NAME.py` with `register(app)` (`app.command(...)(fn)` or `app.add_typer`),
plus its module path in `GROUPS`; numbers come in through `workbench.cli.options` (`Int`, `Float`, `Episodes`, `Seed`).

Bad input is one line: `main()` runs the app with Click's standalone mode off and turns every `WorkbenchError` and
every Click usage error (an unknown option, a value that does not parse, a missing argument) into `error: ...` on
stderr with exit code 2 -- never a traceback, never Click's multi-line usage box.
"""

from __future__ import annotations

import importlib
import sys

import typer

from workbench.errors import WorkbenchError, closest

__all__ = ["GROUPS", "THREADS_ENV", "app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="goal-workbench: find and steer the goals trained models actually learned. "
    "Set WORKBENCH_THREADS=N to fix torch's CPU threads (default: torch's own; 1 is fastest on a busy machine).",
)

GROUPS = (
    "workbench.cli.agents",
    "workbench.cli.sae",
    "workbench.cli.lm",
    "workbench.cli.patch",
    "workbench.cli.battery",
    "workbench.cli_retarget",
    "workbench.cli_sweep",
)
"""Command-group modules, each with `register(app)`; registered in this order (the order of `workbench --help`)."""

for _module in GROUPS:
    importlib.import_module(_module).register(app)

THREADS_ENV = "WORKBENCH_THREADS"


def _set_threads() -> None:
    """torch CPU threads from $WORKBENCH_THREADS (unset: torch's default, one per core). Under load, torch's default
    made the tiny policy convs ~10x slower than 1 thread; torch is imported only when the variable is set."""
    import os

    raw = os.environ.get(THREADS_ENV, "")
    if not raw:
        return
    if not raw.isdigit() or int(raw) < 1:
        raise WorkbenchError(f"{THREADS_ENV} must be a positive integer (torch CPU threads), got {raw!r}")
    import torch

    torch.set_num_threads(int(raw))


# Typer raises the exceptions of the Click it ships (vendored as `typer._click` in recent versions); find them
# through a public class so either layout works.
_CLICK = sys.modules[typer.BadParameter.__module__]
_UsageError = _CLICK.UsageError
_ClickException = _CLICK.ClickException
_NoArgsIsHelp = getattr(_CLICK, "NoArgsIsHelpError", None)
_NoSuchOption = _CLICK.NoSuchOption


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _option_names(ctx) -> list[str]:
    names: list[str] = []
    for param in getattr(getattr(ctx, "command", None), "params", []):
        names += [o for o in [*param.opts, *param.secondary_opts] if o.startswith("-")]
    return names


def _usage_message(err) -> str:
    """One line for a Click usage error: the problem, the nearest valid choice, and where help is."""
    ctx = getattr(err, "ctx", None)
    if isinstance(err, _NoSuchOption):
        msg = f"no such option {err.option_name}"
        near = closest(err.option_name, _option_names(ctx), n=1) or sorted(err.possibilities or [])[:1]
        if near:
            msg += f"; did you mean {', '.join(near)}?"
    else:
        msg = _one_line(err.format_message()).rstrip(".")
        if msg.startswith("No such command") and ctx is not None:
            wrong = msg.split("'")[1] if msg.count("'") >= 2 else ""
            near = closest(wrong, ctx.command.list_commands(ctx), n=1)
            msg = f"no such command {wrong!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
        msg = msg[:1].lower() + msg[1:]
    if ctx is not None:
        msg += f" (see `{ctx.command_path} --help`)"
    return msg


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: user mistakes become one line on stderr and exit code 2."""
    try:
        _set_threads()
        code = app(args=argv, prog_name="workbench", standalone_mode=False)
    except WorkbenchError as err:
        _fail(str(err))
    except _UsageError as err:
        if _NoArgsIsHelp is not None and isinstance(err, _NoArgsIsHelp):
            typer.echo(err.format_message())  # `workbench` / `workbench lm` alone: the help
            sys.exit(2)
        _fail(_usage_message(err), code=2)
    except _ClickException as err:
        _fail(err.format_message(), code=err.exit_code or 2)
    except typer.Abort:
        _fail("aborted", code=1)
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        sys.exit(code)  # typer.Exit(n) from a command (battery run: 1 when an expectation fails), --help: 0
