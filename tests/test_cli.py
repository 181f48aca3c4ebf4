"""The CLI end to end on the (shrunk) embedded dataset: run, records, skipping, leaderboard, cache verbs,
listing, and one-line errors with exit code 2."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from conftest import TINY_REGISTRY, call_cli, use_registry

from probebench.learners.linear import C_GRID

REGISTRY = (
    TINY_REGISTRY
    + """  preprocess: {input_size: 96}
hub_only:
  family: mim
  method: MAE
  arch: ViT-B/16
  source: {kind: timm, model: vit_base_patch16_224.mae}
"""
)


@pytest.fixture
def registry(tmp_path, monkeypatch, tiny_embedded):
    return use_registry(tmp_path, monkeypatch, REGISTRY)


call = call_cli


def test_run_writes_records_skips_finished_and_merges_leaderboard(registry, monkeypatch, capsys):
    code, out, err = call(monkeypatch, capsys, "run", "--workers", "0")
    assert code == 0, err
    assert "hub_only" not in out, "no --encoder: only encoders with weights on this machine"
    assert out.count("done") == 26, "the default suite: 6 object, 6 part and 1 discovery task per encoder"
    for task in (
        "linear",
        "linear_bn",
        "attentive",
        "knn",
        "object_dense_retrieval",
        "object_segmentation",
        "part_retrieval",
        "part_linear",
        "part_attentive",
        "keypoint_correspondence",
        "part_dense_retrieval",
        "part_segmentation",
        "discovery",
    ):
        assert f"lite0 x embedded x {task}:" in out
    from probebench.paths import results_dir

    runs = results_dir() / "runs"
    rec = json.loads((runs / "lite0__embedded__knn.json").read_text())
    assert rec["dataset"]["synthetic"] is True and rec["dataset"]["name"] == "embedded"
    assert rec["encoder"]["weights_id"] == rec["encoder"]["source"]["sha256"]
    assert rec["knobs"]["feature"] == "pooled" and rec["knobs"]["task"]["temperature"] == 0.07
    assert rec["knobs"]["preprocess"]["input_size"] == 96 and rec["knobs"]["task"]["ks"] == [10, 20, 100, 200]
    assert {"torch", "timm", "numpy"} <= set(rec["versions"]) and "commit" in rec["git"]
    assert rec["schema_version"] == 5 and rec["deviations"] == [] and rec["probe"]["probe"] == "knn"
    assert rec["training_seed"] is None and rec["timings"]["extract_s"] >= 0 and rec["knobs"]["threads"] >= 1
    assert {"top1_k10", "top1_k10_ci95", "mean_per_class_k200", "n_test"} <= set(rec["metrics"])
    lo, hi = rec["metrics"]["top1_k10_ci95"]
    assert lo <= rec["metrics"]["top1_k10"] <= hi
    rnd = json.loads((runs / "tiny_random__embedded__knn.json").read_text())
    assert rnd["knobs"]["feature"] == "cls"
    assert rnd["encoder"]["facts"]["final_norm"].startswith("final LayerNorm")
    lin = json.loads((runs / "lite0__embedded__linear.json").read_text())
    assert lin["probe"]["variant"] == "plain" and lin["probe"]["chosen_c"] in C_GRID
    assert len(lin["probe"]["val_curve"]) >= 12 and lin["deviations"] == ["linear-no-augmentation"]
    assert not any(isinstance(v, str) and " " in v for v in lin["probe"].values()), "no prose in details"
    assert json.loads((runs / "lite0__embedded__linear_bn.json").read_text())["probe"]["variant"] == "bn"
    att = json.loads((runs / "tiny_random__embedded__attentive.json").read_text())
    assert att["knobs"]["feature"] == "tokens" and len(att["probe"]["val_curve"]) == att["probe"]["epochs"]
    assert 1 <= att["probe"]["chosen_epoch"] <= att["probe"]["epochs"]
    assert att["probe"]["heads"] >= 1 and "attentive-epoch-on-val" in att["deviations"]
    first = {p.name: json.loads(p.read_text())["metrics"] for p in runs.glob("lite0__*.json")}

    code, out, _ = call(monkeypatch, capsys, "run", "-e", "lite0", "--workers", "0")
    assert code == 0 and out.count("skipped") == 13
    code, out, _ = call(monkeypatch, capsys, "run", "-e", "lite0", "--workers", "0", "--force")
    assert code == 0 and out.count("done") == 13
    again = {p.name: json.loads(p.read_text())["metrics"] for p in runs.glob("lite0__*.json")}
    assert again == first, "the same command twice gives the same numbers, for every probe"

    long = pd.read_csv(results_dir() / "leaderboard.csv")
    long["variant"] = long["variant"].fillna("")  # CSV has no empty string apart from a missing value
    assert set(long.encoder) == {"lite0", "tiny_random"} and long.synthetic.all()
    assert {"metric", "variant", "value", "lo", "hi", "level", "protocol", "commit"} <= set(long.columns)
    board = long[long.primary]
    assert len(board) == 26, "one primary number per record"
    primary = dict(zip(board.task + ":" + board.encoder, board.metric + "/" + board.variant, strict=True))
    assert primary["knn:lite0"] == "top1/k=20" and primary["linear:lite0"] == "top1/"
    assert primary["part_segmentation:lite0"] == "miou/" and primary["discovery:lite0"] == "corloc/heap"
    assert board.lo.notna().all(), "every headline number has its interval (mIoU's from per-image counts)"
    assert (board.lo <= board.value).all()
    assert (board.value <= board.hi).all()
    assert board.level.isin(["object", "part", "discovery"]).all()
    knn = long[(long.encoder == "lite0") & (long.task == "knn") & (long.metric == "top1")]
    assert list(knn.variant) == ["k=10", "k=100", "k=20", "k=200"]
    assert long[long.task == "linear"].setting.str.startswith("C=").all()
    wide = pd.read_csv(results_dir() / "leaderboard_wide.csv")
    assert list(wide.encoder) == ["lite0", "tiny_random"]  # supervised before control
    assert "knn/embedded/top1/k=20" in wide.columns and "discovery/embedded/corloc/heap" in wide.columns
    code, out, _ = call(monkeypatch, capsys, "leaderboard")
    assert code == 0 and out.startswith("| encoder") and "lite0" in out
    code, out, _ = call(monkeypatch, capsys, "leaderboard", "--view", "long", "--format", "json", "-t", "knn")
    rows = json.loads(out)
    assert code == 0 and {r["task"] for r in rows} == {"knn"} and len(rows) == len(long[long.task == "knn"])
    code, out, _ = call(monkeypatch, capsys, "leaderboard", "--view", "families", "--format", "csv")
    fam = pd.read_csv(io.StringIO(out))
    assert code == 0 and set(fam.family) == {"supervised", "control"} and (fam.n_encoders == 1).all()
    code, _, err = call(monkeypatch, capsys, "leaderboard", "--format", "html")
    assert code == 2 and "--format 'html': use one of csv, markdown, json" in err


def test_real_encoder_beats_the_random_control(registry):
    from probebench.api import run

    outcomes = {o.encoder: o.metrics for o in run(["lite0", "tiny_random"], ["knn"])}
    assert outcomes["lite0"]["top1_k10"] > outcomes["tiny_random"]["top1_k10"] + 20


def test_extract_and_cache_verbs(registry, monkeypatch, capsys):
    args = [
        "extract",
        "-e",
        "tiny_random",
        "--layers",
        "-1",
        "--layers",
        "4",
        "--tokens",
        "patches",
        "--workers",
        "0",
    ]
    code, out, err = call(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "extracted" in out
    code, out, _ = call(monkeypatch, capsys, *args)
    assert "already cached" in out
    code, out, _ = call(monkeypatch, capsys, "cache", "ls")
    assert "tiny_random" in out and "patches.L11" in out and "patches.L4" in out
    code, out, _ = call(monkeypatch, capsys, "cache", "du")
    assert "tiny_random" in out and "total" in out
    code, _, err = call(monkeypatch, capsys, "cache", "rm")
    assert code == 2 and "--encoder" in err
    code, out, _ = call(monkeypatch, capsys, "cache", "rm", "--encoder", "tiny_random")
    assert code == 0 and "removed 1" in out
    _, out, _ = call(monkeypatch, capsys, "cache", "ls")
    assert "tiny_random" not in out


def test_list_shows_offline_availability(registry, monkeypatch, capsys):
    code, out, _ = call(monkeypatch, capsys, "list", "encoders")
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert lines["lite0"][-1] == "yes" and lines["tiny_random"][-1] == "yes" and lines["hub_only"][-1] == "no"
    _, out, _ = call(monkeypatch, capsys, "list", "tasks")
    assert "knn" in out
    _, out, _ = call(monkeypatch, capsys, "list", "tasks")
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert (
        "papers" in rows["knn_imagenet"]
        and "test=imagenet:val" in rows["knn_imagenet"]
        and "default" in rows["knn"]
    )
    monkeypatch.delenv("PROBEBENCH_DATA", raising=False)
    _, out, _ = call(monkeypatch, capsys, "list", "datasets")
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "train=20" in rows["embedded"] and "knn" in rows["embedded"]
    assert "not found" in rows["imagenet"] and "knn_imagenet" in rows["imagenet"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "-e", "lite"], "unknown encoder 'lite'; did you mean lite0"),
        (["run", "-e", "lite0", "-t", "lineer"], "unknown task 'lineer'"),
        (["run", "-e", "lite0", "-t", "knn", "--layer", "x"], "--layer 'x': give a block index"),
        (["run", "-e", "lite0", "-t", "knn", "--feature", "mean"], "--feature 'mean': use cls"),
        (["run", "-e", "lite0", "-t", "knn", "--feature", "cls", "--workers", "0"], "no class token"),
        (["run", "-e", "hub_only"], "timm/vit_base_patch16_224.mae"),
        (["extract", "-e", "lite0", "-d", "/no/such/folder"], "/no/such/folder does not exist"),
        (["extract", "-e", "tiny_random", "--layers", "40"], "layer 40 is out of range"),
        (["extract", "-e", "tiny_random", "--tokens", "attn"], "unknown token kind"),
        (["list", "models"], "probebench list encoders|datasets|tasks"),
        (["run", "-e", "lite0", "--suite", "papers"], "dataset 'imagenet'"),
        (["run", "-e", "lite0", "--suite", "nope"], "unknown suite 'nope'"),
        (["run", "-e", "lite0", "--suite", "papers", "-t", "knn"], "give --task or --suite, not both"),
        (["extract", "-e", "lite0", "--tokens", "keys", "--workers", "0"], "has no attention keys"),
        (["report", "--grids", "photos"], "--grids 'photos': use all, synthetic, none"),
    ],
)
def test_bad_input_is_one_line_exit_2(registry, monkeypatch, capsys, args, expected):
    code, _, err = call(monkeypatch, capsys, *args)
    assert code == 2
    assert expected in err and err.strip().count("\n") == 0 and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--encoder"], "Option '--encoder' requires an argument"),
        (["report", "--grids"], "Option '--grids' requires an argument"),
        (["leaderboard", "--bogus"], "No such option: --bogus"),
        (["nosuchverb"], "No such command 'nosuchverb'"),
    ],
)
def test_usage_errors_are_click_s_usage_message_and_exit_2(registry, monkeypatch, capsys, args, expected):
    """A flag without its value, an unknown flag or verb: click's usage message, never a traceback."""
    code, _, err = call(monkeypatch, capsys, *args)
    assert code == 2 and expected in err and "Traceback" not in err


def test_bad_registry_stops_before_any_work(tmp_path, monkeypatch, capsys, registry):
    registry.write_text(REGISTRY.replace("family: mim", "family: mimic"))
    code, out, err = call(monkeypatch, capsys, "run", "-e", "lite0")
    assert code == 2 and "entry 'hub_only', field 'family'" in err and "running" not in out
