"""Progress of long work: what runs, how far it has got, how fast, and how long is left.

Work reports itself as stages, each advanced as it goes:

    with progress.stage("extract lite0 x embedded", total=300, unit="img") as advance:
        for batch in batches:
            ...
            advance(len(batch))

Where that shows depends on where the process runs (`show_on_terminal`, `write_to`):
- on a terminal: rich's progress bars on stderr, one per running stage, with its rate and time left;
- in a job of a grid: `progress.json` in the job's folder, rewritten at most once a second, which the
  `probebench run` waiting for the jobs and `probebench status` read to show each running job's stage;
- anywhere else (a log file, CI, tests, `--launcher` jobs' own logs): nothing, so logs stay short.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

NOTE = "progress.json"
WRITE_EVERY_S = 1.0


@dataclass
class Stage:
    """One stage of work: `done` of `total` units (total None: unknown), since `started` (epoch seconds)."""

    label: str
    total: int | None
    unit: str
    done: int = 0
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def rate(self) -> float | None:
        seconds = self.updated - self.started
        return self.done / seconds if self.done and seconds > 0 else None

    @property
    def left_s(self) -> float | None:
        """Seconds left at the rate so far (None until there is a rate or without a total)."""
        rate = self.rate
        return (self.total - self.done) / rate if rate and self.total is not None else None

    def line(self) -> str:
        """`extract lite0 x embedded: 120/300 img, 35.2 img/s, 5 s left`."""
        if self.total is None and not self.done:  # a stage that names what runs; its steps report inside
            return self.label
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        parts = [f"{self.label}: {count} {self.unit}"]
        if self.rate is not None:
            parts.append(f"{self.rate:.3g} {self.unit}/s")
        if self.left_s is not None:
            parts.append(f"{duration(self.left_s)} left")
        return ", ".join(parts)


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _Terminal:
    """rich's bars on stderr: one per stage, removed when it ends."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            # lines printed meanwhile go above the bars; stdout only when it is this terminal too (rich
            # would send a redirected stdout's lines to the terminal instead of the file)
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=True,
        )
        self.ids: dict[int, int] = {}

    def start(self, stage: Stage) -> None:
        if not self.ids:
            self.bars.start()
        self.ids[id(stage)] = self.bars.add_task(stage.label, total=stage.total, rate="")

    def update(self, stage: Stage) -> None:
        rate = f"{stage.rate:.3g} {stage.unit}/s" if stage.rate else ""
        self.bars.update(self.ids[id(stage)], completed=stage.done, rate=rate)

    def end(self, stage: Stage) -> None:
        self.bars.remove_task(self.ids.pop(id(stage)))
        if not self.ids:
            self.bars.stop()


class _Note:
    """`progress.json` of a grid's job: the stages running now, written whole, at most once a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[int, Stage] = {}
        self.written = 0.0

    def _write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.written < WRITE_EVERY_S:
            return
        from probebench.io import atomic_write

        note = {"stages": [asdict(s) for s in self.stages.values()], "updated": now}
        try:
            atomic_write(self.path, json.dumps(note).encode())
            self.written = now
        except Exception as exc:  # noqa: BLE001 - showing progress never stops the work
            logging.getLogger(__name__).debug("progress not written: %s", exc)

    def start(self, stage: Stage) -> None:
        self.stages[id(stage)] = stage
        self._write(force=True)

    def update(self, stage: Stage) -> None:
        self._write()

    def end(self, stage: Stage) -> None:
        self.stages.pop(id(stage), None)
        self._write(force=True)


_SINKS: list = []


def show_on_terminal(enabled: bool | None = None) -> None:
    """Draw bars on stderr: when `enabled`, or (None) when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if enabled and not any(isinstance(s, _Terminal) for s in _SINKS):
        _SINKS.append(_Terminal())


def write_to(folder: Path) -> None:
    """Keep `folder/progress.json` current (a grid's job; its parent and `status` read it)."""
    _SINKS.append(_Note(Path(folder) / NOTE))


def reset() -> None:
    """Show progress nowhere (tests, and a process that is done reporting)."""
    _SINKS.clear()


@contextmanager
def stage(label: str, total: int | None = None, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """A stage of work; the callable it gives advances it by n units (default 1). Costs nothing where
    progress shows nowhere."""
    if not _SINKS:
        yield lambda n=1: None
        return
    current = Stage(label, total, unit)
    sinks = list(_SINKS)

    def advance(n: int = 1) -> None:
        current.done += n
        current.updated = time.time()
        for sink in sinks:
            sink.update(current)

    for sink in sinks:
        sink.start(current)
    try:
        yield advance
    finally:
        for sink in sinks:
            sink.end(current)


def read_stage_note(folder: Path) -> list[Stage]:
    """The stages a job's `progress.json` says are running, read as untrusted input: a note that is not
    one reads as no stage (progress is a courtesy; a damaged note never stops `status`)."""
    from probebench.io import BadFile, read_json

    path = Path(folder) / NOTE
    if not path.is_file():
        return []
    try:
        note = read_json(path, 2**20)
        stages = [
            Stage(
                str(s["label"])[:200],
                int(s["total"]) if s["total"] is not None else None,
                str(s["unit"])[:20],
                int(s["done"]),
                float(s["started"]),
                float(s["updated"]),
            )
            for s in note["stages"]
        ]
    except (BadFile, KeyError, TypeError, ValueError):
        return []
    return stages


def job_line(folder: Path) -> str:
    """What a running job is doing, from its note: the innermost stage's line ("" when none is known)."""
    stages = read_stage_note(folder)
    return stages[-1].line() if stages else ""
