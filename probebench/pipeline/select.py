"""What a run runs: the encoders and tasks a `RunConfig` names, looked up in the files it names."""

from __future__ import annotations

from probebench.encoders.load import resolve_encoder
from probebench.encoders.registry import EncoderEntry, get_entry, load_registry
from probebench.errors import UserError
from probebench.pipeline.config import RunConfig
from probebench.tasks.catalog import Task, get_suite, get_tasks, load_tasks


def available_encoders(registry: dict[str, EncoderEntry]) -> list[str]:
    """Registry encoders whose weights are on this machine (cache, package or random init)."""
    return [
        n
        for n, e in registry.items()
        if resolve_encoder(e, strict_available=False, download=False).weights_id != "unavailable"
    ]


def select_encoders(cfg: RunConfig) -> list[EncoderEntry]:
    """The encoders `cfg` names (registry names or models named directly), else every registry encoder with
    weights on this machine."""
    registry = load_registry(cfg.registry)
    names = list(cfg.encoders) or available_encoders(registry)
    if not names:
        raise UserError(
            "no encoder has weights on this machine; pass --encoder NAME (see `probebench list encoders`)"
        )
    return [get_entry(registry, name, cfg.family) for name in names]


def select_tasks(cfg: RunConfig) -> list[Task]:
    """The tasks and groups `cfg` names, else its suite (default: `default`, on the embedded data)."""
    catalog = load_tasks(cfg.tasks_file)
    if cfg.tasks:
        return [task for name in cfg.tasks for task in get_tasks(name, catalog)]
    return get_suite(cfg.suite or "default", catalog)
