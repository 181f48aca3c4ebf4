"""Reading the results: `leaderboard` (merge the records, print one view), `report` (HTML and Markdown with
plots) and `status` (the jobs of a grid)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from probebench.cli.app import app
from probebench.cli.common import Grids, Level, TableFormat, View, left_out, metavar, one_of
from probebench.errors import UserError


@app.command("status")
def status_command(
    watch: Annotated[
        bool, typer.Option("--watch", help="Redraw until no job is running or pending.")
    ] = False,
    every: Annotated[float, typer.Option("--every", help="--watch: seconds between redraws.")] = 10.0,
):
    """The jobs under results/jobs/ as a table: done, running, failed or pending; failures with their log."""
    import time

    from tabulate import tabulate

    from probebench.launch.status import counts, grid

    if every <= 0:
        raise UserError(f"--every {every}: give a positive number of seconds")
    while True:
        rows = grid()
        if not rows:
            raise UserError("no jobs under results/jobs/: submit some with `probebench run --launcher local`")
        table = [[r.job, r.state, r.records, r.job_id, r.doing or r.why] for r in rows]
        n = counts(rows)
        if watch and sys.stdout.isatty():
            typer.echo("\033[2J\033[H", nl=False)  # clear the terminal: each redraw replaces the last
        headers = ["job", "state", "records", "job id", "now (running) or why (failed, pending)"]
        typer.echo(tabulate(table, headers=headers, tablefmt="simple"))
        typer.echo(f"{len(rows)} jobs: " + ", ".join(f"{v} {k}" for k, v in n.items()))
        if not watch or n["running"] + n["pending"] == 0:
            return
        time.sleep(every)


@app.command("leaderboard")
def leaderboard_command(
    view: Annotated[
        str,
        typer.Option("--view", callback=one_of(View), metavar=metavar(View), help="Which table to print."),
    ] = "wide",
    fmt: Annotated[
        str,
        typer.Option(
            "--format", callback=one_of(TableFormat), metavar=metavar(TableFormat), help="How to print it."
        ),
    ] = "markdown",
    task: Annotated[list[str] | None, typer.Option("--task", "-t", help="Only these tasks.")] = None,
    level: Annotated[
        list[str] | None,
        typer.Option("--level", callback=one_of(Level), metavar=metavar(Level), help="Only these levels."),
    ] = None,
    family: Annotated[list[str] | None, typer.Option("--family", help="Only these encoder families.")] = None,
    encoder: Annotated[list[str] | None, typer.Option("--encoder", "-e", help="Only these encoders.")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
):
    """Merge results/runs/*.json into results/leaderboard*.csv and print one view of it, filtered (each
    filter repeatable)."""
    from probebench.results import tables
    from probebench.results.render import render_table

    board, paths = tables.refresh()
    levels = [v.value for v in level] if level else None
    long = tables.select(board.long, task=task, level=levels, family=family, encoder=encoder, dataset=dataset)
    shown = tables.VIEWS[view.value](long)
    typer.echo(render_table(shown, fmt.value) if not shown.empty else "(no results)")
    left_out(board)
    typer.echo(f"written: {', '.join(str(p) for p in paths.values())}", err=True)


@app.command("report")
def report_command(
    grids: Annotated[
        str,
        typer.Option(
            "--grids",
            metavar=metavar(Grids),  # checked by the report, which names its own choices
            help="Discovery image grids: all, synthetic (draw no photos: for a report you share) or none.",
        ),
    ] = "all",
):
    """Write results/report.html (self-contained) and report.md, with the plots under results/plots/."""
    from probebench.report.build import build_report

    out = build_report(grids=grids)
    typer.echo(f"report: {out.html}")
    typer.echo(f"markdown: {out.markdown}")
    typer.echo(f"plots: {len(out.plots)} files in {out.html.parent / 'plots'}")
