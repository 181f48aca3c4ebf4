"""The leaderboard merge on hand-made records: duplicates, an older protocol version, a missing metric, a
failed run, variants, the wide and per-family tables, and the papers' numbers beside ours."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_discovery_record
from conftest import make_record as _record
from conftest import save_record as _save

from probebench.results import tables
from probebench.results.papers import published
from probebench.results.render import render_table


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "results"
    _save(
        r, _record("a_sup", "linear", {"top1": 80.0, "top1_ci95": [78.0, 82.0], "top5": 95.0, "n_test": 10})
    )
    _save(r, _record("b_mim", "linear", {"top1": 60.0, "top5": 85.0}, family="mim"))
    _save(r, _record("c_mim", "linear", {"top1": 70.0, "top5": 90.0}, family="mim"))
    _save(r, _record("a_sup", "knn", {"top1_k10": 70.0, "top1_k20": 72.0}, probe="knn", primary="top1_k20"))
    corloc = {"heap": 40.0, "heap_no_intra": 35.0, "lost": 30.0}
    _save(r, make_discovery_record("a_sup", corloc, metrics={"heap_corloc_ci95": [30.0, 50.0]}))
    return r


def test_the_long_table_has_a_row_per_number_with_variants_and_intervals(root):
    board = tables.build_leaderboard(root)
    long = board.long
    assert list(long.columns) == tables.LONG_COLUMNS and board.notes == [] and board.problems == []
    a = long[(long.encoder == "a_sup") & (long.task == "linear")].set_index("metric")
    assert a.loc["top1", "value"] == 80.0 and (a.loc["top1", "lo"], a.loc["top1", "hi"]) == (78.0, 82.0)
    assert "n_test" not in set(long.metric) and "top1_ci95" not in set(long.metric)
    knn = long[long.task == "knn"]
    assert set(zip(knn.metric, knn.variant, strict=True)) == {("top1", "k=10"), ("top1", "k=20")}
    assert knn[knn.primary].variant.tolist() == ["k=20"]
    disc = long[long.task == "discovery"].set_index("variant")
    assert disc.loc["heap_no_intra", "metric"] == "corloc"  # the longest method name wins over "heap"
    assert disc.loc["heap", "primary"] and (disc.loc["heap", "lo"], disc.loc["heap", "hi"]) == (30.0, 50.0)


def test_an_older_protocol_version_is_left_out_and_counted(root):
    _save(root, _record("b_mim", "knn", {"top1_k20": 50.0}, probe="knn", primary="top1_k20", protocol="0"))
    old_disc = _record(
        "b_mim",
        "discovery",
        {"heap_corloc": 9.0},
        probe="discovery",
        level="discovery",
        primary="heap_corloc",
    )
    _save(root, old_disc)  # discovery is at protocol 2 now
    board = tables.build_leaderboard(root)
    assert not ((board.long.encoder == "b_mim") & board.long.task.isin(["knn", "discovery"])).any()
    (note,) = board.notes
    assert note.startswith("left out 2 record(s) of an older protocol version: discovery (v1), knn (v0)")


def test_duplicates_keep_the_newest_and_say_so(root):
    newer = _record("a_sup", "linear", {"top1": 81.0}, created="2026-11-26T00:00:00+00:00")
    _save(root, newer, name="a_sup__embedded__linear__copy.json")
    board = tables.build_leaderboard(root)
    top1 = board.long[
        (board.long.encoder == "a_sup") & (board.long.task == "linear") & (board.long.metric == "top1")
    ]
    assert top1.value.tolist() == [81.0]
    assert board.notes == ["left out 1 duplicate record(s) of the same result; kept the newest of each"]


def test_a_missing_metric_leaves_an_empty_cell_and_a_failed_run_is_named(root):
    _save(root, _record("d_ctl", "linear", {"top5": 20.0}, family="control"))  # its primary top1 never came
    (root / "runs" / "e_cut__embedded__linear.json").write_text(
        '{"schema_version": 2, "enc'
    )  # killed mid-write
    board = tables.build_leaderboard(root)
    assert any("1 record(s) have no value for their primary metric: d_ctl x linear" in n for n in board.notes)
    assert any(n.startswith("left out 1 file(s) in runs/") for n in board.notes)
    (problem,) = board.problems
    assert problem == "e_cut__embedded__linear.json: not valid JSON (Unterminated string starting at)"
    wide = tables.wide(board.long).set_index("encoder")
    assert "d_ctl" not in wide.index  # no headline number at all
    _save(
        root, _record("d_ctl", "knn", {"top1_k20": 21.0}, family="control", probe="knn", primary="top1_k20")
    )
    wide = tables.wide(tables.build_leaderboard(root).long).set_index("encoder")
    assert wide.loc["d_ctl", "knn/embedded/top1/k=20"] == 21.0 and pd.isna(
        wide.loc["d_ctl", "linear/embedded/top1"]
    )
    assert list(wide.index) == ["a_sup", "b_mim", "c_mim", "d_ctl"]  # families in the registry's order


def test_a_hand_edited_number_is_named_not_skipped(root):
    """A metric that is not a number was skipped without a word: its row silently missing."""
    path = root / "runs" / "a_sup__embedded__linear.json"
    record = json.loads(path.read_text())
    record["metrics"]["top1"] = "99.9"
    path.write_text(json.dumps(record))
    board = tables.build_leaderboard(root)
    said = "a_sup__embedded__linear.json: metric 'top1' is \"99.9\", not a number; re-run it"
    assert said in board.problems
    record["metrics"]["top1"] = 99.9
    path.write_text(json.dumps(record))
    (problem,) = tables.build_leaderboard(root).problems
    assert "primary value" in problem and "is not its metric 'top1'" in problem


def test_families_give_mean_spread_and_count(root):
    fam = tables.families(tables.build_leaderboard(root).long)
    mim = fam[(fam.family == "mim") & (fam.task == "linear")].iloc[0]
    assert mim["mean"] == 65.0 and mim["min"] == 60.0 and mim["max"] == 70.0 and mim["n_encoders"] == 2
    assert (
        round(mim["std"], 3) == round(pd.Series([60.0, 70.0]).std(), 3) and mim["encoders"] == "b_mim c_mim"
    )
    sup = fam[(fam.family == "supervised") & (fam.task == "linear")].iloc[0]
    assert sup["n_encoders"] == 1 and pd.isna(sup["std"])


def test_paper_numbers_sit_beside_ours_with_the_difference_flagged(root):
    pub = published()
    row = pub[(pub.encoder == "mae_vitb") & (pub.task == "attentive_imagenet")].iloc[0]
    assert row.paper_value == 74.2 and row.table == "Table 1, Attentive"
    ours = _record(
        "mae_vitb", "attentive_imagenet", {"top1": 73.5}, dataset="imagenet", family="mim", probe="attentive"
    )
    _save(root, ours)
    _save(
        root,
        _record("deit_vitb", "attentive_imagenet", {"top1": 79.0}, dataset="imagenet", probe="attentive"),
    )
    cmp = tables.papers(tables.build_leaderboard(root).long).set_index("encoder")
    assert set(cmp.index) == {"mae_vitb", "deit_vitb"}
    assert round(cmp.loc["mae_vitb", "difference"], 2) == -0.7 and not cmp.loc["mae_vitb", "flagged"]
    assert round(cmp.loc["deit_vitb", "difference"], 2) == -2.8 and cmp.loc["deit_vitb", "flagged"]
    again = ours.model_copy(update={"training_seed": 1, "metrics": {"top1": 74.5}})
    _save(
        root,
        again.model_copy(update={"primary": again.primary.model_copy(update={"value": 74.5})}),
        "s1.json",
    )
    cmp = tables.papers(tables.build_leaderboard(root).long).set_index("encoder")
    mae = cmp.loc["mae_vitb"]
    assert mae.n_seeds == 2 and mae.value == 74.0 and pd.isna(mae.lo), "two seeds: their mean, one row"


def test_every_published_number_names_a_shipped_task_its_dataset_and_a_registry_encoder():
    from probebench.encoders.registry import load_registry
    from probebench.tasks import load_tasks

    catalog, registry = load_tasks(None), load_registry()
    pub = published()
    assert len(pub) > 150
    for row in pub.itertuples():
        assert row.task in catalog and catalog[row.task].dataset == row.dataset, row
        assert row.encoder in registry, row
        assert 0 < row.paper_value <= 100, row


def test_write_and_render(root):
    board = tables.build_leaderboard(root)
    paths = tables.write(board, root)
    assert sorted(paths) == sorted(
        ["leaderboard.csv", "leaderboard_wide.csv", "leaderboard_families.csv", "leaderboard_papers.csv"]
    )
    assert len(pd.read_csv(paths["leaderboard.csv"])) == len(board.long)
    md = render_table(tables.wide(board.long), "markdown")
    assert md.splitlines()[0].startswith("| encoder") and "80.00" in md
    assert json.loads(render_table(board.long, "json"))[0]["encoder"]
    filtered = tables.select(board.long, family=["mim"], task=["linear"])
    assert set(filtered.encoder) == {"b_mim", "c_mim"}
