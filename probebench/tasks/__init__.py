"""Tasks: what to measure on cached features. Probes are code (`base.Probe`, one module per family: `object`,
`part`, `segmentation`, `discovery`); tasks are data (`spec`: a probe, a data binding and knobs, from
`tasks.yaml`).

A task reads features only from the cache (never from a model), so every probe works for every encoder.
"""

from probebench.tasks import discovery as _discovery  # noqa: F401 - registers the discovery probe
from probebench.tasks import object as _object  # noqa: F401 - registers the object-level probes
from probebench.tasks import part as _part  # noqa: F401 - registers the part-level probes
from probebench.tasks.base import PROBES, Context, Evaluation, Metric, Needs, Probe, RoleData, register_probe
from probebench.tasks.spec import Task, get_suite, get_task, get_tasks, load_tasks, parse_tasks

__all__ = [
    "PROBES",
    "Context",
    "Evaluation",
    "Metric",
    "Needs",
    "Probe",
    "RoleData",
    "Task",
    "get_suite",
    "get_task",
    "get_tasks",
    "load_tasks",
    "parse_tasks",
    "register_probe",
]
