"""`workbench battery run`: declarative probe batteries (`workbench.battery`) against artifacts, for CI.

Exit codes: 0 every expectation holds, 1 some fall short, 2 bad input (a spec, a report path, the store). Everything
that can be checked is checked before the first check runs: report destinations (`--junit` a writable .xml file,
`--report` a folder), the results store, then every spec file whole. So a bad `--junit` costs nothing, records
nothing and never exits 1, the code reserved for "an expectation failed".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.cli.options import JsonOpt, StoreOpt, dump, record, store_path

battery_app = typer.Typer(no_args_is_help=True, help="Probe batteries: declarative checks run against artifacts.")


@battery_app.command("run")
def battery_run(
    paths: Annotated[list[Path], typer.Argument(help="battery files or folders of *.toml (e.g. probes/)")],
    as_json: JsonOpt = False,
    junit: Annotated[Path | None, typer.Option(help="write a JUnit XML report to this .xml file")] = None,
    report: Annotated[Path | None, typer.Option(help="write battery.md into this folder")] = None,
    store: StoreOpt = None,
) -> None:
    """Run every check; exit 0 if all expectations hold, 1 if any falls short, 2 if the input is invalid."""
    from rich.console import Console

    from workbench.battery import check_output_paths, load_checks, run_check, to_json, to_store_rows, write_reports
    from workbench.store import new_run_id

    check_output_paths(junit, report)  # before any check: a bad destination costs nothing
    at = store_path(store)
    checks = load_checks(paths)  # validates every file first: a bad spec exits 2 before any work
    console = Console(stderr=True, soft_wrap=True)  # failure lines must stay whole for logs and greps
    run_id = new_run_id("battery")
    results = []
    for i, check in enumerate(checks, start=1):
        with console.status(f"[{i}/{len(checks)}] {check.name}"):
            result = run_check(check)
        results.append(result)
        verdict = "[green]pass[/green]" if result.passed else "[red]FAIL[/red]"
        console.print(f"{verdict} {check.name} ({result.seconds:.1f} s)")
        for line in result.failures():
            console.print(f"     {line}", highlight=False)
    record(to_store_rows(results, run_id), at)
    write_reports(results, run_id, None, junit, report)
    if as_json:
        dump(to_json(results, run_id))
    failed = [r for r in results if not r.passed]
    console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed (run {run_id})")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `workbench battery ...` to the main app."""
    app.add_typer(battery_app, name="battery")
