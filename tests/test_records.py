"""The result record is typed to its leaves: no field a program reads is `Any`, a shipped probe's details
take no key their model does not name (protocol prose stays out), and a record says which family its encoder
had when it ran even after the families file moves on."""

from __future__ import annotations

import json
import typing

import pytest
from conftest import make_discovery_record, make_record, save_record
from pydantic import BaseModel, ValidationError

from probebench.results.records import BadRecord, read_record
from probebench.results.schema import ResultRecord

# Open by design: keyword arguments a registry entry passes to the library's model constructor.
OPEN_FIELDS = {"arch_kwargs"}


def _untyped(annotation, path: str, seen: set) -> list[str]:
    """Paths under `annotation` that are typed `Any`."""
    if annotation is typing.Any:
        return [path]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return []
        seen.add(annotation)
        return [
            bad
            for name, field in annotation.model_fields.items()
            if name not in OPEN_FIELDS
            for bad in _untyped(field.annotation, f"{path}.{name}", seen)
        ]
    return [bad for arg in typing.get_args(annotation) for bad in _untyped(arg, path, seen)]


def test_no_field_of_the_record_is_typed_any():
    assert _untyped(ResultRecord, "record", set()) == []


def test_a_shipped_probes_details_take_no_unnamed_key(tmp_path):
    """Protocol prose (an objective, an optimiser) once sat in the details; the typed models refuse it."""
    linear = {
        "probe": "linear",
        "variant": "plain",
        "c_grid": [1.0],
        "chosen_c": 1.0,
        "chosen_index": 0,
        "val_curve": [],
        "val_fraction": 0.2,
        "n_fit": 8,
        "n_val": 2,
        "refit_iterations": 3,
        "all_converged": True,
        "max_iter": 100,
        "tol": 1e-4,
        "sweep_s": 0.1,
        "total_s": 0.2,
        "n_train": 10,
    }
    record = make_record("enc", "linear", {"top1": 50.0}, details=linear)
    assert record.probe.chosen_c == 1.0
    with pytest.raises(ValidationError, match="objective"):
        make_record("enc", "linear", {"top1": 50.0}, details={**linear, "objective": "cross-entropy"})
    with pytest.raises(ValidationError):
        make_record("enc", "linear", {"top1": 50.0}, details={**linear, "chosen_c": "large"})
    # a probe registered elsewhere records its details as JSON
    other = make_record("enc", "mine", {"top1": 50.0}, details={"probe": "mine", "grids": [[4, 4]]})
    assert other.probe.model_dump() == {"probe": "mine", "grids": [[4, 4]]}


def test_a_record_keeps_the_family_its_encoder_had_and_reads_back_whole(tmp_path):
    root = tmp_path / "results"
    path = save_record(root, make_discovery_record("enc", {"heap": 50.0, "lost": 40.0}, family="retired"))
    record = read_record(path)
    assert record.encoder.family == "retired" and record.probe.methods == ["heap", "lost"]
    assert record.knobs.resolution.policy == "encoder" and record.encoder.facts.patch_size == 16
    raw = json.loads(path.read_text())
    raw["deviations"] = ["Not An Id"]
    path.write_text(json.dumps(raw))
    with pytest.raises(BadRecord, match="not a valid record"):
        read_record(path)


def test_a_record_of_the_older_schema_is_not_finished_so_run_recomputes_it(tmp_path):
    """Schema 3 held the same numbers with untyped fields and protocol prose: its config hash still matches,
    but only a current record counts as finished."""
    from probebench.results.records import finished

    path = save_record(tmp_path / "results", make_record("enc", "linear", {"top1": 50.0}))
    assert finished(path, "h") and not finished(path, "another hash")
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "schema_version": 3}))
    assert not finished(path, "h")
