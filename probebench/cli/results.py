"""Reading the results: `leaderboard` (merge the records, print one view), `compare` (two encoders, task by
task, with paired statistics), `claims` (the papers' claims judged on the records here), `report` (HTML and
Markdown with plots) and `status` (the jobs of a grid)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from probebench.cli.app import app
from probebench.cli.common import (
    Format,
    Grids,
    Levels,
    Resamples,
    View,
    check_resamples,
    left_out,
    metavar,
    one_of,
)
from probebench.errors import UserError
from probebench.stats.bootstrap import COMPARE_RESAMPLES


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
    fmt: Format = "markdown",
    task: Annotated[list[str] | None, typer.Option("--task", "-t", help="Only these tasks.")] = None,
    level: Levels = None,
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
    if view.value == "ranks":  # from the per-item outcomes of the records the filters keep
        from probebench.stats.ranks import rank_tasks

        kept = set(zip(long.encoder, long.task, long.dataset, strict=True))
        shown = rank_tasks(
            [r for r in board.records if (r.encoder.name, r.task.name, r.dataset.filed_under) in kept]
        )
    else:
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


@app.command("compare")
def compare_command(
    a: Annotated[str, typer.Argument(help="ENCODER, or ENCODER@layer=N,feature=F,task=T.")],
    b: Annotated[str, typer.Argument(help="The other encoder, or the same one under other settings.")],
    task: Annotated[list[str] | None, typer.Option("--task", "-t", help="Only these tasks.")] = None,
    level: Levels = None,
    fmt: Format = "markdown",
    resamples: Resamples = COMPARE_RESAMPLES,
    seed: Annotated[int, typer.Option("--resampling-seed", help="Seed of the bootstrap's draws.")] = 0,
):
    """A minus B on every task both ran: the primary metric's difference with a paired bootstrap interval
    over the shared test items (and seeds), its p-value, and Holm's correction across the rows."""
    import pandas as pd

    from probebench.results import tables
    from probebench.results.render import render_table
    from probebench.stats.compare import compare_sides, parse_side

    check_resamples(resamples)
    if seed < 0:
        raise UserError(f"--resampling-seed {seed}: give a non-negative integer")
    sides = parse_side(a), parse_side(b)
    board = tables.build_leaderboard()
    levels = [v.value for v in level] if level else None
    result = compare_sides(board.records, *sides, tasks=task, levels=levels, resamples=resamples, seed=seed)
    typer.echo(f"A = {sides[0].label}, B = {sides[1].label}; difference = A - B, in points")
    table = result.table
    if fmt.value != "json":  # tables print two decimals; a p-value keeps three significant digits
        shown = {c: table[c].map(lambda v: "" if pd.isna(v) else f"{v:.3g}") for c in ("p", "p_holm")}
        table = table.assign(**shown)
    typer.echo(render_table(table, fmt.value))
    for line in result.notes:
        typer.echo(f"note: {line}", err=True)
    left_out(board)


@app.command("claims")
def claims_command(
    claims: Annotated[
        Path | None, typer.Option("--claims", help="A claims file (default: the papers' claims, shipped).")
    ] = None,
    fmt: Format = "markdown",
    resamples: Resamples = COMPARE_RESAMPLES,
):
    """Each claim of the papers judged on the records here: per task, the family difference with a
    hierarchical bootstrap interval (items, seeds, encoders); per level, supported on k of n tasks."""
    from probebench.results import tables
    from probebench.results.render import render_table
    from probebench.stats.claims import judge_claims, load_claims

    check_resamples(resamples)
    stated = load_claims(claims)
    board = tables.build_leaderboard()
    per_task, summary = judge_claims(board.records, stated, resamples)
    typer.echo(render_table(summary.drop(columns=["text"]), fmt.value))
    typer.echo("")
    typer.echo(render_table(per_task, fmt.value) if not per_task.empty else "(no task judged)")
    left_out(board)
