"""Probes: the adapters between a task and the learners, one module per family (`object`, `part`,
`segmentation`, `discovery`), each a `probebench.tasks.contract.Probe`.

`PROBES` names every shipped probe lazily, as `"module:Class"` with its level and protocol version beside
it: the catalogue and the leaderboard read those without importing a probe (or torch). A probe's module is
imported the first time `get_probe` asks for it; `tests/test_tasks.py` keeps the table equal to the classes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from probebench.errors import suggest
from probebench.tasks.contract import LEVELS

if TYPE_CHECKING:
    from probebench.tasks.contract import Probe


@dataclass(frozen=True)
class ProbeRef:
    """Where a probe's class lives (`"module:Class"`) and the two facts read without importing it."""

    target: str
    level: str
    protocol_version: str


_HERE = "probebench.tasks.probes"
PROBES: dict[str, ProbeRef] = {
    "knn": ProbeRef(f"{_HERE}.object:KnnProbe", "object", "1"),
    "linear": ProbeRef(f"{_HERE}.object:LinearProbe", "object", "1"),
    "attentive": ProbeRef(f"{_HERE}.object:AttentiveProbe", "object", "1"),
    "object_segmentation": ProbeRef(f"{_HERE}.segmentation:ObjectSegmentationProbe", "object", "2"),
    "object_dense_retrieval": ProbeRef(f"{_HERE}.dense_retrieval:ObjectDenseRetrievalProbe", "object", "1"),
    "part_dense_retrieval": ProbeRef(f"{_HERE}.dense_retrieval:PartDenseRetrievalProbe", "part", "1"),
    "part_retrieval": ProbeRef(f"{_HERE}.part:PartRetrievalProbe", "part", "1"),
    "keypoint_correspondence": ProbeRef(f"{_HERE}.correspondence:KeypointCorrespondenceProbe", "part", "1"),
    "part_segmentation": ProbeRef(f"{_HERE}.segmentation:PartSegmentationProbe", "part", "2"),
    "discovery": ProbeRef(f"{_HERE}.discovery:DiscoveryProbe", "discovery", "3"),
}
_LOADED: dict[str, Probe] = {}


def get_probe(name: str) -> Probe:
    """The probe named `name` (one instance per name), importing its module on first use."""
    if name not in _LOADED:
        if name not in PROBES:
            raise suggest(name, PROBES, "probe")
        module, cls = PROBES[name].target.split(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return _LOADED[name]


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Class decorator for a probe defined outside this package (a notebook's, a test's): task entries can
    name it from then on. The shipped ones are listed in `PROBES` instead."""
    if cls.level not in LEVELS:
        raise ValueError(f"probe {cls.name!r}: level must be one of {LEVELS}")
    PROBES[cls.name] = ProbeRef(f"{cls.__module__}:{cls.__qualname__}", cls.level, cls.protocol_version)
    _LOADED[cls.name] = cls()
    return cls
