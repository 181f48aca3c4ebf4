"""The data a run reads: each task's datasets, or every task bound to `--dataset`, and the views tasks read
(part crops, sliding windows), each loaded or made once. `bind_to_dataset` is the one place `--dataset`
rebinds tasks.
"""

from __future__ import annotations

from pathlib import Path

from probebench.data.base import ImageDataset
from probebench.data.lookup import get_dataset
from probebench.data.views import view_for
from probebench.data.views.crops import no_crops_in
from probebench.errors import UserError
from probebench.pipeline.config import RunConfig
from probebench.tasks.catalog import Task


def with_views(tasks: list[Task], loaded: dict[str, ImageDataset]) -> dict[str, ImageDataset]:
    """`loaded` plus the views tasks read (part crops, sliding windows), each made once, by name."""
    out = dict(loaded)
    for task in tasks:
        for dataset, split in task.bindings.values():
            fed = task.fed(dataset)
            if fed not in out:
                out[fed] = view_for(loaded[dataset], task.crops, task.needs.windows)
            # no image of the split has one (`all` is every split: part retrieval searches a whole dataset)
            if task.crops is not None and not out[fed].split_indices(split):
                raise UserError(no_crops_in(out[fed], split))
    return out


def bind_to_dataset(tasks: list[Task], dataset: ImageDataset) -> tuple[list[Task], dict[str, ImageDataset]]:
    """Every task with every role on `dataset` (whose own name then names the records), and the data they
    read: the dataset and its views."""
    tasks = [t.on_dataset(dataset.name) for t in tasks]
    return tasks, with_views(tasks, {dataset.name: dataset})


def load_task_data(tasks: list[Task], cfg: RunConfig) -> tuple[list[Task], dict[str, ImageDataset]]:
    """The tasks (bound to `cfg.dataset` when given: a name or a folder) and every dataset and view they
    read, each made once (a generated dataset is written here)."""
    if cfg.dataset is not None:
        return bind_to_dataset(tasks, get_dataset(cfg.dataset, cfg.datasets, cfg.data_root))
    names = dict.fromkeys(d for t in tasks for d, _ in t.bindings.values())  # in task order
    return tasks, with_views(tasks, {n: get_dataset(n, cfg.datasets, cfg.data_root) for n in names})


def check_task_data(tasks: list[Task], datasets: Path | None, data_root: Path | None) -> list[str]:
    """One line per task whose data a run would refuse: a dataset that does not exist or does not read,
    crops naming keypoints it lacks or a source it has not, windows it cannot be cut into. Each dataset is
    read once; `validate --tasks` says this before any run does."""
    from probebench.data.checks import check_label_values

    loaded: dict[str, ImageDataset | UserError] = {}
    values: dict[str, list[str]] = {}  # each dataset's label maps are read once, by the first task on them
    problems = []
    for task in tasks:
        names = dict.fromkeys(d for d, _ in task.bindings.values())
        for name in names:
            if name not in loaded:
                try:
                    loaded[name] = get_dataset(name, datasets, data_root)
                except UserError as exc:
                    loaded[name] = exc
        failed = [loaded[n] for n in names if isinstance(loaded[n], UserError)]
        try:
            if failed:
                raise failed[0]
            with_views([task], {n: loaded[n] for n in names})
        except UserError as exc:
            problems += [f"task {task.name!r}: {line}" for line in str(exc).splitlines()]
            continue
        # part label maps are read after extraction, so `run` refuses a bad value late: say it now
        if task.knobs.get("annotation") == "mask" or (task.crops and task.crops.source == "masks"):
            for name in names:
                if name not in values:
                    values[name] = check_label_values(loaded[name])
                problems += [f"task {task.name!r}: {line}" for line in values[name]]
    return problems
