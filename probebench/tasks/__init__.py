"""Tasks: what to measure on cached features. Probes are code (`contract.Probe`, one module per family under
`probes/`, named lazily in `probes.PROBES`); tasks are data (`catalog`: a probe, a data binding and knobs,
from `tasks.yaml`).

A task reads features only from the cache (never from a model), so every probe works for every encoder.
"""

from probebench.tasks.catalog import Task, get_suite, get_task, get_tasks, load_tasks, parse_tasks
from probebench.tasks.contract import Context, Evaluation, Metric, Needs, Probe, RoleData
from probebench.tasks.probes import PROBES, get_probe, register_probe

__all__ = [
    "PROBES",
    "Context",
    "Evaluation",
    "Metric",
    "Needs",
    "Probe",
    "RoleData",
    "Task",
    "get_probe",
    "get_suite",
    "get_task",
    "get_tasks",
    "load_tasks",
    "parse_tasks",
    "register_probe",
]
