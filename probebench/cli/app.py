"""The `probebench` command: the typer app and its groups. Each verb lives in the module of its concern
(`run`, `inspect`, `results`, `store`); `probebench.cli.main` runs the app and turns every problem into one
line."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Probe frozen pretrained image encoders for object- and part-level knowledge.",
)
list_app = typer.Typer(no_args_is_help=True, help="List encoders, datasets or tasks.")
app.add_typer(list_app, name="list")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect and prune the feature cache.")
app.add_typer(cache_app, name="cache")
data_app = typer.Typer(no_args_is_help=True, help="Get the papers' datasets.")
app.add_typer(data_app, name="data")
