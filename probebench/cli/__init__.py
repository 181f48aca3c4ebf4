"""The `probebench` command line, one module per concern: `run` (run, extract), `inspect` (list, show,
validate), `results` (leaderboard, report, status) and `store` (doctor, data download, cache). Options are
declared once in `common`. The commands are thin: they parse, build the objects the library takes (a
`RunConfig` for `run`) and print.

Bad input is one line on stderr naming the problem and the fix, exit code 2, no traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from probebench.cli import inspect, results, run, store  # noqa: F401 - each registers its commands
from probebench.cli.app import app
from probebench.errors import UserError

__all__ = ["app", "main"]


class _Stderr(logging.StreamHandler):
    """Log lines to whatever `sys.stderr` is when they are written: while progress bars are drawn it is
    their console, which prints the line above the bars instead of through them."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler sets it once; the property always looks again
        pass


def main() -> None:
    from probebench import progress
    from probebench.allocator import keep_freed_memory

    keep_freed_memory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", handlers=[_Stderr()])
    progress.show_on_terminal()  # bars on a terminal only: logs and CI output stay short
    try:
        code = app(standalone_mode=False)  # click returns, rather than raises, the code of typer.Exit here
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # one line per problem
            typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: completed shards and results are kept; re-run to continue", err=True)
        sys.exit(130)
    except Exception as exc:  # click's own usage errors
        usage, aborts = _click_errors()
        if isinstance(exc, usage) and (line := _no_such_command(exc)):
            typer.echo(f"error: {line}", err=True)
            sys.exit(2)
        if isinstance(exc, usage):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, aborts):
            sys.exit(1)
        if _out_of_memory(exc):
            said = " ".join(str(exc).split())[:200] or _where(exc)
            typer.echo(
                f"error: out of memory ({said}); lower --batch-size, --max-pixels or the task's sizes "
                "(max_side, crop, short, long, batch_size); finished shards and results are kept",
                err=True,
            )
            sys.exit(2)
        raise


def _where(exc: BaseException) -> str:
    """Where an exception without a message was raised: `while in voc.py, read_image_set`."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    return f"while in {Path(frames[-1].filename).name}, {frames[-1].name}" if frames else "no detail"


def _out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: Python's, numpy's (a MemoryError), or torch's on the CPU or a GPU."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def _no_such_command(exc) -> str | None:
    """`probebench list models`: one line naming the commands there are, rather than click's usage text."""
    ctx = getattr(exc, "ctx", None)
    commands = getattr(ctx.command, "commands", None) if ctx is not None else None
    if not commands or ctx.parent is None or "No such command" not in str(getattr(exc, "message", "")):
        return None  # the top level keeps click's usage text, which lists every command
    name = exc.message.split("'")[1] if "'" in exc.message else exc.message
    return f"no command {name!r} here; use `{ctx.command_path} {'|'.join(commands)}`"


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts) as the command line may raise them. Newer typer releases carry their own copy
    of click, whose exceptions do not derive from the installed click's: both are caught."""
    import click

    vendored = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return (click.exceptions.ClickException, vendored), (click.exceptions.Abort, typer.Abort)
