"""The run configuration: everything `probebench run` can be told, checked once, then passed whole.

One `RunConfig` is built from the command line (`probebench run`), the Python API (`probebench.run(...,
**settings)`) or a YAML file (`probebench run --config run.yaml`, `RunConfig.from_yaml`): the same fields,
the same domains, the same one-line errors. The pipeline, the grid and every job receive it whole; a grid job
gets `with_absolute_paths()`, since it may start on another node in another folder.

Each field's `flag` (its metadata) is the option of `probebench run` that sets it; `tests/test_cli.py` keeps
the command's options and these fields equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probebench.cache.read import FEATURE_KINDS
from probebench.errors import UserError, suggest
from probebench.extraction.request import ExtractionOptions

SEED = 0  # the default training seed (a record of another seed is named `__seed<n>`) and resampling seed
LAUNCHERS = ("none", "local", "slurm")
DAY_MIN = 24 * 60


def _opt(default: Any, flag: str, **kw: Any) -> Any:
    return field(default=default, metadata={"flag": flag, **kw})


@dataclass(frozen=True)
class Resources:
    """What each job of a grid asks for. `parallel` caps the local jobs running at once (Slurm has its own
    limits)."""

    partition: str | None = None
    gpus: int = 0
    cpus: int | None = None
    time_min: int = DAY_MIN
    mem_gb: float | None = None
    parallel: int = 1

    def __post_init__(self) -> None:
        if self.gpus > 1:
            raise UserError(
                f"--gpus {self.gpus}: a job runs on one GPU; to split one extraction over several, run "
                "`probebench extract --nproc N` (torchrun) inside a job"
            )
        for name in ("gpus", "cpus", "time_min", "mem_gb", "parallel"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "gpus" else 1):
                flag = {"time_min": "time", "mem_gb": "mem", "parallel": "jobs"}.get(name, name)
                raise UserError(f"--{flag} {value}: give a positive number")


@dataclass(frozen=True)
class RunConfig:
    """The settings of one run. Names (encoders, tasks) stay names here: `select_encoders` and
    `select_tasks` look them up in the files the config names."""

    # what runs
    encoders: tuple[str, ...] = _opt((), "--encoder")  # empty: every encoder with weights here
    family: str | None = _opt(None, "--family")
    tasks: tuple[str, ...] = _opt((), "--task")  # tasks or groups; empty (and no suite): the default suite
    suite: str | None = _opt(None, "--suite")
    dataset: str | None = _opt(None, "--dataset")  # every task on this dataset (a name or a folder)
    # what changes the numbers (each names its records)
    layers: tuple[int | str, ...] | None = _opt(None, "--layer")  # None: the last block, no suffix
    feature: str | None = _opt(None, "--feature")
    # the training seeds: a trained probe runs once per seed (the validation carve, initialisation, batch
    # order); a training-free one once. The resampling seed draws every interval's test items.
    seeds: tuple[int, ...] = _opt((SEED,), "--seeds")
    resampling_seed: int = _opt(SEED, "--resampling-seed")
    # where things are
    weights: Path | None = _opt(None, "--weights", path=True)
    registry: Path | None = _opt(None, "--registry", path=True)
    datasets: Path | None = _opt(None, "--datasets", path=True)
    data_root: Path | None = _opt(None, "--data-root", path=True)
    tasks_file: Path | None = _opt(None, "--tasks", path=True)
    results_root: Path | None = _opt(None, "--results", path=True)
    # how extraction runs
    batch_size: int = _opt(64, "--batch-size")
    workers: int | None = _opt(None, "--workers")
    device: str | None = _opt(None, "--device")
    strict: bool = _opt(False, "--strict")
    max_pixels: int = _opt(ExtractionOptions.max_pixels, "--max-pixels")
    shard_size: int = _opt(ExtractionOptions.shard_size, "--shard-size")
    threads: int | None = _opt(
        None, "--threads"
    )  # torch's intra-op threads; None: torch's (a job: its share)
    force: bool = _opt(False, "--force")
    # where it runs
    launcher: str = _opt("none", "--launcher")
    jobs: int = _opt(1, "--jobs")
    partition: str | None = _opt(None, "--partition")
    gpus: int | None = _opt(None, "--gpus")
    cpus: int | None = _opt(None, "--cpus")
    time_min: int = _opt(DAY_MIN, "--time")
    mem: float | None = _opt(None, "--mem")
    # how extraction runs, as the extractor takes it (made from the fields above)
    extraction: ExtractionOptions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _coerce(self)
        if self.weights is not None and len(self.encoders) != 1:
            raise UserError("--weights needs exactly one --encoder")
        if self.tasks and self.suite:
            raise UserError("give --task or --suite, not both")
        if self.feature is not None and self.feature not in FEATURE_KINDS:
            raise UserError(f"--feature {self.feature!r}: use {', '.join(FEATURE_KINDS)}")
        if self.resampling_seed < 0:
            raise UserError(f"--resampling-seed {self.resampling_seed}: give a non-negative integer")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: give at least 1")
        self._check_launcher()
        options = ExtractionOptions(
            batch_size=self.batch_size,
            num_workers=self.workers,
            device=self.device,
            strict=self.strict,
            max_pixels=self.max_pixels,
            shard_size=self.shard_size,
        )
        object.__setattr__(self, "extraction", options)

    def _check_launcher(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise UserError(f"--launcher {self.launcher!r}: use one of {', '.join(LAUNCHERS)}")
        slurm_only = {"--partition": self.partition, "--cpus": self.cpus, "--mem": self.mem}
        if self.launcher == "local" and (
            named := [f for f, value in slurm_only.items() if value is not None]
        ):
            raise UserError(
                f"{', '.join(named)} apply to --launcher slurm; a local job gets its share of the cores"
            )
        if self.launcher != "none":
            Resources(self.partition, self.gpus or 0, self.cpus, self.time_min, self.mem, self.jobs)
            return
        given = {"--jobs": self.jobs != 1, "--partition": self.partition, "--gpus": self.gpus is not None}
        given |= {"--cpus": self.cpus, "--mem": self.mem is not None, "--time": self.time_min != DAY_MIN}
        if named := [flag for flag, value in given.items() if value]:
            raise UserError(f"{', '.join(named)} apply to jobs: add --launcher local or --launcher slurm")

    # -- made from it ----------------------------------------------------------------------------------------
    def resources(self, gpus: int) -> Resources:
        """What each job asks for, `gpus` standing in for an unset `--gpus` (the launcher's default)."""
        return Resources(self.partition, gpus, self.cpus, self.time_min, self.mem, self.jobs)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes`, checked like the original."""
        return dataclasses.replace(self, **changes)

    def with_absolute_paths(self) -> RunConfig:
        """Paths as a job on another node, started in another folder, can use them: the datasets config
        (also the ./datasets.yaml found here), the data root, weights, registry, tasks file, results, and
        `--dataset` when it names a folder rather than a dataset."""
        from probebench.data.config import config_path
        from probebench.data.lookup import dataset_folder
        from probebench.paths import results_dir

        def absolute(p: Path | None) -> Path | None:
            return None if p is None else Path(p).resolve()

        folder = dataset_folder(self.dataset, self.datasets) if self.dataset is not None else None
        return self.replace(
            dataset=str(folder) if folder is not None else self.dataset,
            weights=absolute(self.weights),
            registry=absolute(self.registry),
            datasets=absolute(config_path(self.datasets)),
            data_root=absolute(self.data_root),
            tasks_file=absolute(self.tasks_file),
            results_root=absolute(self.results_root or results_dir()),
        )

    # -- built from ----------------------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: dict[str, Any], origin: str = "settings") -> RunConfig:
        """A config from a mapping of field names (the API's keyword arguments, a YAML file's keys); an
        unknown name is one line with the close ones."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        for name in settings:
            if name not in known:
                raise UserError(f"{origin}: {suggest(str(name), sorted(known), 'run setting')}")
        return cls(**settings)

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> RunConfig:
        """A config from a YAML mapping of field names (`encoders: [mae_vitb]`, `batch_size: 32`), with
        `overrides` (the options given on the command line) written over it."""
        from probebench.config import load_yaml, read_config

        raw = load_yaml(read_config(path), str(path))
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise UserError(f"{path}: expected a mapping of run settings (encoders: [...], tasks: [...])")
        return cls.from_settings({**raw, **overrides}, str(path))


def flags() -> dict[str, str]:
    """Each settable field's option of `probebench run`: field name -> flag."""
    return {f.name: f.metadata["flag"] for f in dataclasses.fields(RunConfig) if f.init}


# -- checking what each field holds: a YAML file or a notebook may hand over any type ------------------------
_TUPLES = {"encoders", "tasks", "layers", "seeds"}


def _coerce(cfg: RunConfig) -> None:
    """Normalise the config in place (it is frozen, hence `object.__setattr__`): a single name for a list
    field becomes a one-item tuple, a path string a Path, `--layer` values ints or "all"; a value of the wrong
    type is one line naming the field."""
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        value = getattr(cfg, f.name)
        flag = f.metadata["flag"]
        if f.name in _TUPLES and value is not None:
            value = (value,) if isinstance(value, str | int) else tuple(value)
            if f.name == "layers":
                value = parse_layers(value) if value else None
            elif f.name == "seeds":
                value = parse_seeds(value)
            elif not all(isinstance(x, str) for x in value):
                raise UserError(f"{flag}: give names, got {list(value)!r}")
        elif f.metadata.get("path") and value is not None:
            if not isinstance(value, str | Path):
                raise UserError(f"{flag}: give a path, got {value!r}")
            value = Path(value)
        elif value is not None and f.name not in _TUPLES:
            _check_type(f.name, flag, value, f.default)
        object.__setattr__(cfg, f.name, value)


def _check_type(name: str, flag: str, value: Any, default: Any) -> None:
    if name == "mem":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int) or name in {"workers", "threads", "gpus", "cpus"}:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f"{flag} {value!r}: not a {_kind(name, default)}")


def _kind(name: str, default: Any) -> str:
    if name == "mem":
        return "number"
    if isinstance(default, bool):
        return "yes/no value (true or false)"
    if isinstance(default, int) or name in {"workers", "threads", "gpus", "cpus"}:
        return "whole number"
    return "name"


def parse_seeds(values: tuple | list) -> tuple[int, ...]:
    """--seeds values: non-negative integers, each given alone or comma-separated ("0,1,2"), repeats
    dropped, in the order given."""
    out: list[int] = []
    for v in values:
        parts = v.split(",") if isinstance(v, str) else [v]
        for part in parts:
            if isinstance(part, bool) or not isinstance(part, int | str):
                raise UserError(f"--seeds {v!r}: give non-negative whole numbers, e.g. --seeds 0,1,2")
            try:
                seed = int(part)
            except ValueError:
                raise UserError(
                    f"--seeds {v!r}: give non-negative whole numbers, e.g. --seeds 0,1,2"
                ) from None
            if seed < 0:
                raise UserError(f"--seeds {v!r}: give non-negative whole numbers, e.g. --seeds 0,1,2")
            out.append(seed)
    if not out:
        raise UserError("--seeds: give at least one seed, e.g. --seeds 0,1,2")
    return tuple(dict.fromkeys(out))


def parse_layers(values: tuple | list) -> tuple[int | str, ...]:
    """--layer values: block indices (negative from the end) or "all"."""
    out: list[int | str] = []
    for v in values:
        if v == "all" or (isinstance(v, int) and not isinstance(v, bool)):
            out.append(v)
            continue
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            raise UserError(f"--layer {v!r}: give a block index (negative from the end) or 'all'") from None
    return tuple(out)
