"""Tasks as data: a task is a probe, a data binding and knobs, one entry in a tasks YAML.

    knn5_birds: {probe: knn, dataset: birds, knobs: {ks: [5]}}
    heap_ecssd: {probe: heap, datasets: {train: duts_tr, test: ecssd}, splits: {train: train, test: test}}

Fields: `probe` (a registered probe), `dataset` (every role's dataset) and/or `datasets` (per role), `split`
(the split of a one-role probe) or `splits` (per role; the probe's defaults otherwise), `knobs` (overrides of
the probe's defaults; unknown names are errors), `description`, and `groups` / `suites` tags (`--task object`
runs a group, `--suite papers` a suite). The shipped tasks are defined the same way (`tasks.yaml` in this
folder); a user file (`--tasks FILE`, else `./tasks.yaml`) adds its own, validated like `encoders.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from probebench.config import NAME_RE, parse_entries, read_config
from probebench.data.views import view_name
from probebench.data.views.crops import CropSpec
from probebench.errors import UserError, suggest
from probebench.geometry import SIZED_MODES
from probebench.paths import user_file
from probebench.tasks.contract import Metric, Needs, Probe
from probebench.tasks.knobs import defaults as knob_defaults
from probebench.tasks.knobs import knob_problems
from probebench.tasks.probes import PROBES, get_probe

SHIPPED = "shipped"


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_RE.pattern)
    probe: str
    dataset: str | None = None
    datasets: dict[str, str] = {}
    split: str | None = None
    splits: dict[str, str] = {}
    knobs: dict[str, Any] = {}
    description: str | None = None
    groups: list[str] = []
    suites: list[str] = []
    crops: CropSpec | None = None  # run the probe on part crops of the data (a cached view of its own)
    # the input size every encoder reads (the papers' suite fixes 224); None: each encoder's own evaluation
    # size. Applies to the `resize` and `stretch` framings; native-geometry probes read images at their own
    # size.
    resolution: int | None = Field(default=None, ge=16, le=4096)

    @model_validator(mode="after")
    def _fits_probe(self) -> TaskEntry:
        try:
            probe = get_probe(self.probe)
        except UserError as exc:
            raise ValueError(str(exc)) from None
        roles = probe.roles
        for what, given in (("datasets", self.datasets), ("splits", self.splits)):
            if set(given) - set(roles):
                raise ValueError(
                    f"{what}: probe {probe.name!r} has roles {', '.join(roles)}, not {sorted(given)}"
                )
        if self.split is not None and (len(roles) > 1 or self.splits):
            raise ValueError(
                f"split names the split of a one-role probe; give splits: {{role: split}} for {roles}"
            )
        if self.dataset is None and set(self.datasets) != set(roles):
            raise ValueError(f"give dataset, or datasets for every role ({', '.join(roles)})")
        declared = probe.knobs()
        if unknown := [k for k in self.knobs if k not in declared]:
            raise ValueError(f"knobs: {suggest(unknown[0], declared, f'knob of probe {probe.name!r}')}")
        if problems := knob_problems(declared, self.knobs):
            raise ValueError("\n".join(problems))  # one line per knob outside its domain
        knobs = {**knob_defaults(declared), **self.knobs}
        probe.check(knobs)  # how knobs fit together, each in its domain
        if self.crops is not None and probe.needs(knobs).windows is not None:
            raise ValueError(f"probe {probe.name!r} reads sliding windows of whole images; drop crops")
        if self.resolution is not None and probe.needs(knobs).geometry not in SIZED_MODES:
            geometry = probe.needs(knobs).geometry
            raise ValueError(
                f"resolution: probe {probe.name!r} reads images at their own size ({geometry} geometry); "
                "drop resolution, or use its max_side knob"
            )
        return self


@dataclass(frozen=True)
class Task:
    """A resolved task: its probe, each role bound to (dataset, split), and the full set of knobs."""

    name: str
    probe: Probe
    bindings: dict[str, tuple[str, str]]  # role -> (dataset, split)
    knobs: dict
    description: str
    groups: tuple[str, ...] = ()
    suites: tuple[str, ...] = ()
    source: str = SHIPPED
    overrides: dict = field(default_factory=dict)  # the knobs the entry set, for `list tasks`
    crops: CropSpec | None = None  # the probe reads part crops of each role's dataset (`data.views.crops`)
    resolution: int | None = None  # the input size the task fixes for every encoder; None: the encoder's

    @property
    def level(self) -> str:
        """The probe's level; a probe over part crops measures parts (part classification)."""
        return "part" if self.crops is not None else self.probe.level

    @property
    def needs(self) -> Needs:
        return self.probe.needs(self.knobs)

    @property
    def primary(self) -> Metric:
        return self.probe.primary(self.knobs)

    def fed(self, dataset: str) -> str:
        """The name of the data a role on `dataset` reads: the dataset, its crop view or its window view."""
        return view_name(dataset, self.crops, self.needs.windows)

    @property
    def dataset(self) -> str:
        """The dataset results are filed under: the test role's (the last role's when there is no test)."""
        return self.bindings.get("test", list(self.bindings.values())[-1])[0]

    def on_dataset(self, dataset: str) -> Task:
        """The same task with every role on `dataset` (`--dataset` puts any task on any dataset)."""
        return replace(self, bindings={r: (dataset, s) for r, (_, s) in self.bindings.items()})


def bind_task(entry: TaskEntry, source: str) -> Task:
    probe = get_probe(entry.probe)
    splits = {**probe.default_splits, **({r: entry.split for r in probe.roles} if entry.split else {})}
    splits |= entry.splits
    bindings = {r: (entry.datasets.get(r, entry.dataset), splits[r]) for r in probe.roles}
    return Task(
        name=entry.name,
        probe=probe,
        bindings=bindings,
        knobs={**probe.defaults(), **entry.knobs},
        description=entry.description or probe.description,
        groups=tuple(entry.groups),
        suites=tuple(entry.suites),
        source=source,
        overrides=dict(entry.knobs),
        crops=entry.crops,
        resolution=entry.resolution,
    )


def parse_tasks(text: str, origin: str, source: str | None = None) -> dict[str, Task]:
    """Validated task entries (one line for the first bad field, exit 2 at the CLI) -> resolved tasks."""
    entries = parse_entries(text, origin, TaskEntry, what="task")
    return {name: bind_task(e, source or origin) for name, e in entries.items()}


def user_tasks_path(explicit: Path | None = None) -> Path | None:
    return user_file(explicit, "tasks.yaml", "tasks file", "--tasks")


def shipped_tasks() -> dict[str, Task]:
    """The tasks probebench ships (`tasks.yaml` beside this module)."""
    shipped_text = (resources.files("probebench.tasks") / "tasks.yaml").read_text()
    return parse_tasks(shipped_text, "probebench/tasks/tasks.yaml", SHIPPED)


def clashes(mine: dict[str, Task], shipped: dict[str, Task], path: Path) -> list[str]:
    """One line per task of a user's file that takes a shipped task's name."""
    return [f"{path}: task {n!r} is a shipped task; give yours another name" for n in mine if n in shipped]


def load_tasks(path: Path | None = None) -> dict[str, Task]:
    """The shipped tasks plus a user file's (`path`, else ./tasks.yaml when present)."""
    tasks = shipped_tasks()
    user = user_tasks_path(path)
    if user is not None:
        mine = parse_tasks(read_config(user), str(user))
        if clash := clashes(mine, tasks, user):
            raise UserError("\n".join(clash))
        tasks |= mine
    return tasks


def _tagged(tasks: dict[str, Task], tag: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for task in tasks.values():
        for name in getattr(task, tag):
            out.setdefault(name, []).append(task.name)
    return out


def groups(tasks: dict[str, Task]) -> dict[str, list[str]]:
    """Group name -> its tasks, in file order (`--task object`)."""
    return _tagged(tasks, "groups")


def suites(tasks: dict[str, Task]) -> dict[str, list[str]]:
    """Suite name -> its tasks, in file order (`--suite papers`)."""
    return _tagged(tasks, "suites")


def get_tasks(name: str, tasks: dict[str, Task] | None = None) -> list[Task]:
    """A task by name, or every task of a group (`object`); `tasks` defaults to the shipped ones."""
    tasks = load_tasks() if tasks is None else tasks
    grouped = groups(tasks)
    if name in grouped:
        return [tasks[t] for t in grouped[name]]
    if name not in tasks:
        raise suggest(name, [*grouped, *tasks], "task")
    return [tasks[name]]


def get_task(name: str, tasks: dict[str, Task] | None = None) -> Task:
    """One task by name (not a group)."""
    tasks = load_tasks() if tasks is None else tasks
    if name in groups(tasks):
        raise UserError(f"{name!r} is a group of tasks; name one of {', '.join(groups(tasks)[name])}")
    return get_tasks(name, tasks)[0]


def get_suite(name: str, tasks: dict[str, Task] | None = None) -> list[Task]:
    tasks = load_tasks() if tasks is None else tasks
    known = suites(tasks)
    if name not in known:
        raise suggest(name, known, "suite")
    return [tasks[t] for t in known[name]]


__all__ = ["PROBES", "Task", "TaskEntry", "get_suite", "get_task", "get_tasks", "load_tasks", "parse_tasks"]
