"""What the commands share: option declarations (`Annotated`, each written once), closed choices as enums
with one error message for all of them, and the table printers."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from probebench.errors import UserError


def one_of(choices: type[Enum]):
    """An option callback: the value (or each of a repeated option's values) as a member of `choices`, else
    one line `--flag 'value': use one of a, b, c`."""

    def check(param: typer.CallbackParam, value):
        if value is None or isinstance(value, choices):
            return value
        allowed = [c.value for c in choices]
        values = list(value) if isinstance(value, list | tuple) else [value]
        for v in values:
            if v not in allowed:
                raise UserError(f"{param.opts[0]} {v!r}: use one of {', '.join(allowed)}")
        return [choices(v) for v in values] if isinstance(value, list | tuple) else choices(value)

    return check


def metavar(choices: type[Enum]) -> str:
    return "[" + "|".join(c.value for c in choices) + "]"


class Launcher(str, Enum):
    none = "none"  # this process
    local = "local"  # a process per job
    slurm = "slurm"  # a Slurm job per job


class Feature(str, Enum):
    cls = "cls"
    pooled = "pooled"
    both = "both"
    head = "head"


class FramingMode(str, Enum):
    resize = "resize"
    stretch = "stretch"
    native = "native"


class View(str, Enum):
    wide = "wide"
    long = "long"
    families = "families"
    papers = "papers"
    seeds = "seeds"  # mean, spread and each seed's interval of results run over several training seeds
    ranks = "ranks"  # per task, ranks with ties where differences are not significant


class TableFormat(str, Enum):
    csv = "csv"
    markdown = "markdown"
    json = "json"


class Level(str, Enum):
    object = "object"
    part = "part"
    discovery = "discovery"


class Grids(str, Enum):
    all = "all"
    synthetic = "synthetic"
    none = "none"


# -- options several commands take ------------------------------------------------------------------------
Family = Annotated[
    str | None,
    typer.Option("--family", help="Family of the models named directly (-e timm:NAME); default unlabelled."),
]
Registry = Annotated[
    Path | None, typer.Option("--registry", help="Encoder registry file (default: encoders.yaml).")
]
Datasets = Annotated[
    Path | None, typer.Option("--datasets", help="Datasets config (default: ./datasets.yaml if present).")
]
TasksFile = Annotated[
    Path | None, typer.Option("--tasks", help="Tasks file (default: ./tasks.yaml if present).")
]
DataRoot = Annotated[
    Path | None,
    typer.Option("--data-root", help="Base folder for relative dataset roots ($PROBEBENCH_DATA)."),
]
Weights = Annotated[
    Path | None,
    typer.Option("--weights", help="Weights file for sources that cannot download (one encoder)."),
]
MaxPixels = Annotated[
    int,
    typer.Option("--max-pixels", help="Skip images with more pixels as unreadable (decompression bombs)."),
]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]
Workers = Annotated[int | None, typer.Option("--workers", help="Image-decoding processes (0: this one).")]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if any).")]
Strict = Annotated[bool, typer.Option("--strict", help="Fail on an unreadable image instead of skipping it.")]
Format = Annotated[
    str,
    typer.Option(
        "--format", callback=one_of(TableFormat), metavar=metavar(TableFormat), help="How to print it."
    ),
]
Levels = Annotated[
    list[str] | None,
    typer.Option("--level", callback=one_of(Level), metavar=metavar(Level), help="Only these levels."),
]
Resamples = Annotated[int, typer.Option("--resamples", help="Bootstrap resamples (at least 100).")]


def check_resamples(resamples: int) -> None:
    """A bootstrap of fewer than 100 resamples cannot give a 95 % interval or a p-value near 0.05."""
    if resamples < 100:
        raise UserError(f"--resamples {resamples}: give at least 100")


# -- printing ----------------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    """Rows of equal keys as aligned columns under a header line."""
    if not rows:
        return "(none)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def left_out(board) -> None:
    """Name every record file the leaderboard could not read, then one line per kind of thing left out."""
    for line in board.problems:
        typer.echo(f"left out {line}", err=True)
    for line in board.notes:
        typer.echo(f"leaderboard: {line}", err=True)
