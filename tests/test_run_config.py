"""One run configuration: the command, the Python API and a YAML file set the same fields, checked the same
way; a grid job gets it whole."""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path

import pytest
from conftest import TINY_REGISTRY, call_cli

from probebench.errors import UserError
from probebench.pipeline.config import RunConfig, flags


def _run_command_options() -> dict[str, str]:
    """`probebench run`'s options: parameter name -> its long flag (click's own view of the command)."""
    import typer.main

    from probebench import cli

    command = typer.main.get_command(cli.app).commands["run"]
    return {
        p.name: next(o for o in p.opts if o.startswith("--"))
        for p in command.params
        if p.opts and p.name != "config"
    }


def test_the_run_command_and_the_config_have_the_same_options():
    assert sorted(_run_command_options().values()) == sorted(flags().values())


def test_the_api_takes_every_run_setting_and_the_config_only_those():
    import probebench.api as api

    params = inspect.signature(api.run).parameters
    assert any(p.kind is p.VAR_KEYWORD for p in params.values()), "settings reach RunConfig by name"
    for f in dataclasses.fields(RunConfig):
        if f.init:
            RunConfig.from_settings({f.name: f.default})  # every field is a setting the API passes on
    with pytest.raises(UserError, match="unknown run setting 'batchsize'; did you mean batch_size"):
        RunConfig.from_settings({"batchsize": 8})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"weights": "w.pt"}, "--weights needs exactly one --encoder"),
        ({"tasks": ["knn"], "suite": "papers"}, "give --task or --suite, not both"),
        ({"feature": "mean"}, "--feature 'mean': use cls, pooled, both, head"),
        ({"layers": ["last-1"]}, "--layer 'last-1': give a block index"),
        ({"seeds": -1}, "--seeds -1: give non-negative whole numbers"),
        ({"seeds": "0,x"}, "--seeds '0,x': give non-negative whole numbers"),
        ({"seeds": []}, "--seeds: give at least one seed"),
        ({"resampling_seed": -2}, "--resampling-seed -2: give a non-negative integer"),
        ({"batch_size": 0}, "--batch-size 0: give at least 1"),
        ({"shard_size": 0}, "--shard-size 0: give at least 1 image per shard"),
        ({"threads": 0}, "--threads 0: give at least 1"),
        ({"launcher": "ssh"}, "--launcher 'ssh': use one of none, local, slurm"),
        ({"jobs": 2}, "--jobs apply to jobs: add --launcher local or --launcher slurm"),
        ({"launcher": "local", "mem": 4}, "--mem apply to --launcher slurm"),
        ({"launcher": "slurm", "gpus": 2}, "--gpus 2: a job runs on one GPU"),
        ({"batch_size": "8"}, "--batch-size '8': not a whole number"),
        ({"force": "yes"}, "--force 'yes': not a yes/no value"),
        ({"encoders": [1]}, "--encoder: give names"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_option(settings, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig.from_settings(settings)


def test_names_and_paths_are_normalised_once():
    cfg = RunConfig.from_settings({"encoders": "a", "layers": ["-1", "all", 3], "datasets": "d.yaml"})
    assert cfg.encoders == ("a",) and cfg.layers == (-1, "all", 3) and cfg.datasets == Path("d.yaml")
    assert cfg.extraction.batch_size == 64 and cfg.replace(batch_size=8).extraction.batch_size == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seeds = (3,)  # type: ignore[misc]
    assert RunConfig.from_settings({"seeds": ["0,1", 2, "1"]}).seeds == (0, 1, 2)
    assert RunConfig.from_settings({"seeds": 4}).seeds == (4,) and RunConfig().seeds == (0,)


def test_a_yaml_config_is_the_same_settings_and_the_command_line_wins(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("encoders: [tiny_random]\ntasks: [knn]\nseeds: [2, 3]\nbatch_size: 8\n")
    cfg = RunConfig.from_yaml(path, seeds=[5])
    assert cfg.encoders == ("tiny_random",) and cfg.tasks == ("knn",) and cfg.batch_size == 8
    assert cfg.seeds == (5,)
    path.write_text("encoder: [tiny_random]\n")
    with pytest.raises(UserError, match=r"run.yaml: unknown run setting 'encoder'; did you mean encoders"):
        RunConfig.from_yaml(path)
    path.write_text("- knn\n")
    with pytest.raises(UserError, match="expected a mapping of run settings"):
        RunConfig.from_yaml(path)


def test_a_grid_job_gets_absolute_paths_and_a_folder_dataset_as_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    cfg = RunConfig(dataset="imgs", datasets=None, weights=None).with_absolute_paths()
    assert cfg.dataset == str(tmp_path / "imgs") and cfg.results_root.is_absolute()
    assert RunConfig(dataset="embedded").with_absolute_paths().dataset == "embedded", "a name stays a name"


def test_the_api_reaches_every_option_of_the_command(tmp_path, monkeypatch, capsys, tiny_embedded):
    """Weights-free tiny encoder, its own registry file, a results folder, a seed and extraction options,
    all through `probebench.run`: the record lands where the command would write it."""
    import probebench as pb

    registry = tmp_path / "reg.yaml"
    registry.write_text(TINY_REGISTRY)
    lines: list[str] = []
    out = pb.run(
        ["tiny_random"],
        ["knn"],
        registry=registry,
        results_root=tmp_path / "res",
        resampling_seed=1,
        batch_size=8,
        workers=0,
        threads=1,
        echo=lines.append,
    )
    assert [o.status for o in out] == ["done"]
    assert out[0].path == tmp_path / "res" / "runs" / "tiny_random__embedded__knn__resample1.json"
    assert lines == ["running 1 encoder(s) x 1 task(s): tiny_random"]
    assert callable(pb.extract) and callable(pb.run), "the API's doors are not shadowed by modules"
    # the command with the same settings finds the same record finished: one config, one identity
    code, stdout, err = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_random", "-t", "knn", "--registry", str(registry),
        "--results", str(tmp_path / "res"), "--resampling-seed", "1", "--batch-size", "4", "--workers", "0",
    )  # fmt: skip
    assert code == 0, err
    assert "skipped  tiny_random x embedded x knn: top1_k20=" in stdout
    assert (tmp_path / "res" / "leaderboard.csv").is_file()
    config = tmp_path / "run.yaml"
    config.write_text(f"encoders: [tiny_random]\ntasks: [knn]\nregistry: {registry}\nresampling_seed: 1\n")
    code, stdout, err = call_cli(
        monkeypatch, capsys, "run", "--config", str(config), "--resampling-seed", "2"
    )
    assert code == 0, err
    assert "done     tiny_random x embedded x knn" in stdout, "the command line's seed wins over the file"
    results = Path(os.environ["PROBEBENCH_RESULTS"])
    assert (results / "runs" / "tiny_random__embedded__knn__resample2.json").is_file()
