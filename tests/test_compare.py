"""`probebench compare`: paired differences from the per-item outcomes beside the records, end to end on two
tiny random encoders; refusals of bad input; damaged items named and recomputed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from probebench.stats.compare import _mismatch, parse_side
from tests.conftest import TINY_A, call_cli, use_registry

TWO = (
    TINY_A
    + """tiny_b:
  family: contrastive
  method: random init
  arch: ViT-Ti/16
  source: {kind: random, arch: vit_tiny_patch16_224, seed: 1, arch_kwargs: {img_size: 64, depth: 2}}
  preprocess: {input_size: 64}
"""
)


TASKS = """
quick_linear: {probe: linear, dataset: embedded, knobs: {c_grid: [-1, 1, 3]}}
quick_linear_bn: {probe: linear, dataset: embedded, knobs: {c_grid: [-1, 1, 3], variant: bn}}
"""


def _runs() -> Path:
    return Path(os.environ["PROBEBENCH_RESULTS"]) / "runs"


def _compare(monkeypatch, capsys, *args):
    return call_cli(monkeypatch, capsys, "compare", *args, "--format", "csv", "--resamples", "500")


def test_compare_end_to_end(tmp_path, monkeypatch, capsys, tiny_embedded):
    """One run of two encoders (kNN, and a short linear probe over two seeds) serves every check: pairing,
    seeds, settings, refusals, and damaged items (named, then recomputed by the next run)."""
    import pandas as pd

    use_registry(tmp_path, monkeypatch, TWO)
    (tmp_path / "tasks.yaml").write_text(TASKS)
    monkeypatch.chdir(tmp_path)  # ./tasks.yaml adds the short linear task
    for enc in ("tiny_a", "tiny_b"):
        code, out, err = call_cli(
            monkeypatch, capsys, "run", "-e", enc, "-t", "knn", "-t", "quick_linear", "--seeds", "0,1",
            "--workers", "0",
        )  # fmt: skip
        assert code == 0, err
        assert (
            f"{enc} x embedded x knn: top1_k20=" in out and "(training-free: one record for seeds 0,1)" in out
        )
    code, out, err = _compare(monkeypatch, capsys, "tiny_a", "tiny_b")
    assert code == 0, err
    assert out.splitlines()[0] == "A = tiny_a, B = tiny_b; difference = A - B, in points"
    table = pd.read_csv(pd.io.common.StringIO("\n".join(out.splitlines()[1:])))
    assert sorted(table.task) == ["knn", "quick_linear"]
    for row in table.itertuples():
        pattern = f"tiny_a__embedded__{row.task}*.json"
        own = [json.loads(p.read_text()) for p in _runs().glob(pattern)]
        assert row.a == pytest.approx(np.mean([r["primary"]["value"] for r in own]), abs=1e-9)
        assert row.difference == pytest.approx(row.a - row.b, abs=1e-9)
        assert row.lo <= row.difference <= row.hi and 0 < row.p <= 1 and row.p <= row.p_holm <= 1
        assert row.items == 10
    seeds = dict(zip(table.task, table.seeds, strict=True))
    assert seeds == {"knn": "training-free / training-free", "quick_linear": "0,1 / 0,1"}

    # the leaderboard: the mean over seeds, their spread and each seed's interval, and ranks with ties
    code, out, err = call_cli(monkeypatch, capsys, "leaderboard", "--view", "seeds", "--format", "csv")
    seeds_view = pd.read_csv(pd.io.common.StringIO(out))
    lin = seeds_view[(seeds_view.encoder == "tiny_a") & (seeds_view.task == "quick_linear")].iloc[0]
    assert lin.n_seeds == 2 and "seed 0: " in lin.per_seed and "; seed 1: " in lin.per_seed
    assert lin["mean"] == pytest.approx(table.set_index("task").loc["quick_linear", "a"], abs=1e-6)
    knn = seeds_view[(seeds_view.encoder == "tiny_a") & (seeds_view.task == "knn")].iloc[0]
    assert knn.n_seeds == 1 and knn.per_seed.startswith("training-free: ")
    code, out, err = call_cli(monkeypatch, capsys, "leaderboard", "--view", "ranks", "--format", "csv")
    ranks = pd.read_csv(pd.io.common.StringIO(out))
    assert sorted(set(ranks.task)) == ["knn", "quick_linear"] and set(ranks["rank"]) <= {1, 2}
    assert (ranks.rank_lo <= ranks.rank_hi).all() and (ranks["items"] == 10).all()
    tied = ranks.groupby("task")["rank"].apply(lambda r: sorted(r)).to_dict()
    for task, row in table.set_index("task").iterrows():  # one pair a task: Holm leaves its p alone
        if abs(row.p - 0.05) > 0.03:  # compare drew 500 resamples, ranks 10,000: clear of the line
            assert tied[task] == ([1, 1] if row.p >= 0.05 else [1, 2]), (task, row)

    # the papers' claims, judged on what ran: object level only, one encoder a side
    code, out, err = call_cli(monkeypatch, capsys, "claims", "--format", "csv", "--resamples", "500")
    assert code == 0, err
    summary_csv, per_task_csv = out.strip().split("\n\n")
    summary = pd.read_csv(pd.io.common.StringIO(summary_csv)).set_index(["claim", "level", "versus"])
    objects = summary.loc[("supervised-objects", "object", "contrastive, mim")]
    assert objects.tasks == 2 and objects.verdict in ("supported", "contradicted", "inconclusive", "mixed")
    assert "about tiny_a, not the family" in objects.note and "about tiny_b, not the family" in objects.note
    parts = summary.loc[("self-supervised-parts", "part", "supervised")]
    assert parts.verdict == "untested" and "has part-level results" in parts.note
    per_task = pd.read_csv(pd.io.common.StringIO(per_task_csv))
    knn_row = per_task[(per_task.claim == "supervised-objects") & (per_task.task == "knn")].iloc[0]
    knn_diff = table.set_index("task").loc["knn", "difference"]  # tiny_a (supervised) - tiny_b
    assert knn_row.estimate == pytest.approx(knn_diff, abs=1e-9) and knn_row.lo <= knn_row.hi
    bad = tmp_path / "claims.yaml"
    bad.write_text(
        "- {id: x, paper: zhu2023, claim: c, levels: [object], higher: [supervisd], lower: [mim]}\n"
    )
    code, out, err = call_cli(monkeypatch, capsys, "claims", "--claims", str(bad))
    assert code == 2 and "claim x: unknown family 'supervisd'" in err and len(err.strip().splitlines()) == 1

    # one encoder under two settings is a comparison like any other
    code, out, err = call_cli(monkeypatch, capsys, "run", "-e", "tiny_a", "-t", "knn", "--layer", "0")
    assert code == 0, err
    code, out, err = _compare(monkeypatch, capsys, "tiny_a@layer=0", "tiny_a", "-t", "knn")
    assert code == 0 and "A = tiny_a@layer=0, B = tiny_a" in out and "knn" in out, err
    # ...and so is one task variant against another (another knob: the BatchNorm head)
    code, out, err = call_cli(monkeypatch, capsys, "run", "-e", "tiny_a", "-t", "quick_linear_bn")
    assert code == 0, err
    code, out, err = _compare(monkeypatch, capsys, "tiny_a@task=quick_linear_bn", "tiny_a@task=quick_linear")
    assert code == 0 and "quick_linear_bn vs quick_linear" in out, err
    code, out, err = _compare(monkeypatch, capsys, "tiny_a@task=knn", "tiny_a@task=quick_linear")
    assert code == 2 and "knn and quick_linear report different primary metrics (top1, top1_k20)" in err

    for args, said in (
        (("tiny_a", "tiny_a"), "compare: tiny_a twice; give two encoders, or one under two settings"),
        (("tiny_a", "tiny_c"), "compare: no record of encoder 'tiny_c'; did you mean"),
        (("tiny_a@depth=3", "tiny_b"), "give ENCODER or ENCODER@layer=N,feature=F,task=T"),
        (("tiny_a", "tiny_b", "-t", "attentive"), "have no task in common here"),
        (("tiny_a", "tiny_b", "--resamples", "5"), "--resamples 5: give at least 100"),
    ):
        code, out, err = call_cli(monkeypatch, capsys, "compare", *args)
        assert code == 2 and said in err and len(err.strip().splitlines()) == 1, (args, err)

    items = _runs() / "tiny_b__embedded__knn" / "items.npz"
    items.write_bytes(items.read_bytes()[:-7] + b"damaged")
    code, out, err = _compare(monkeypatch, capsys, "tiny_a", "tiny_b", "-t", "knn")
    assert code == 0 and "items.npz: its sha256 is not the one its record keeps" in err
    assert "re-run `probebench run -e tiny_b -t knn`" in err
    code, out, err = call_cli(monkeypatch, capsys, "run", "-e", "tiny_b", "-t", "knn", "--workers", "0")
    assert code == 0 and "done     tiny_b x embedded x knn" in out, "a damaged items file is recomputed"
    code, out, err = _compare(monkeypatch, capsys, "tiny_a", "tiny_b", "-t", "knn")
    assert code == 0 and "sha256" not in err


def test_sides_parse_and_mismatched_items_are_named():
    assert parse_side("dino_vitb@layer=6,feature=pooled").label == "dino_vitb@layer=6,feature=pooled"
    assert parse_side("timm:vit_small").encoder == "timm:vit_small"
    note = _mismatch([["x", "y", "z"]], [["x", "y", "w"]])
    assert note == "compared on the shared items; 1 item(s) only in A (e.g. z); 1 item(s) only in B (e.g. w)"
    assert _mismatch([["x"], ["x"]], [["x"]]) is None


def _saved(root, name: str, hits, ids=None, labels=None, whole_set=False, file=None, **record):
    """A kNN-less linear record of `name` with per-item hits (and labels, for mean per-class accuracy)."""
    from probebench.stats.items import ItemScores
    from tests.conftest import make_record, save_with_items

    ids = ids or [f"img{i:03d}.jpg" for i in range(len(hits))]
    items = ItemScores()
    items.add("top1", "mean", "test", ids, np.asarray(hits), whole_set=whole_set)
    if labels is not None:
        items.add("mean_per_class", "class_mean", "test", ids, np.asarray(hits), labels=np.asarray(labels))
    from probebench.metrics.classification import per_class_mean

    metrics = {"top1": 100.0 * float(np.mean(hits))} | record.pop("metrics", {})
    if labels is not None:
        metrics["mean_per_class"] = per_class_mean(np.asarray(hits), np.asarray(labels))
    return save_with_items(root, make_record(name, "linear", metrics, **record), items, file)


def test_what_cannot_be_compared_is_said_not_compared(tmp_path):
    from probebench.stats.entrants import MIN_ITEMS, gather

    rng = np.random.default_rng(0)
    hits = rng.random(40) < 0.6
    a = _saved(tmp_path, "a", hits)
    few = gather({"a": [_saved(tmp_path, "f1", hits[:5])], "b": [_saved(tmp_path, "f2", hits[5:10])]}, "top1")
    assert few.why is not None and few.why.startswith("5 shared item(s)")
    assert MIN_ITEMS == 10 and "too few for a test" in few.why
    shifted = [f"img{i:03d}.jpg" for i in range(1, 41)]
    gallery = gather(
        {"a": [_saved(tmp_path, "g1", hits, whole_set=True)],
         "b": [_saved(tmp_path, "g2", hits, ids=shifted, whole_set=True)]},
        "top1",
    )  # fmt: skip
    assert "depends on the whole set" in gallery.why
    partial = gather({"a": [a], "b": [_saved(tmp_path, "p", hits, ids=shifted)]}, "top1")
    assert partial.why is None and len(partial.items) == 39
    labelled = gather(
        {"a": [_saved(tmp_path, "l1", hits, labels=np.arange(40) % 3)],
         "b": [_saved(tmp_path, "l2", hits, labels=np.arange(40) % 4)]},
        "mean_per_class",
    )  # fmt: skip
    assert labelled.why == "the records label the same items differently: not compared"
    undefined = _saved(tmp_path, "u", hits, metrics={}, file="u.json")
    undefined = undefined.model_copy(update={"undefined": {"top1": "one class"}})
    undefined._path = a.path.with_name("u.json")
    got = gather({"a": [a], "u": [undefined]}, "top1")
    assert got.left_out == {"u": "u.json: top1 is undefined (one class)"}
    lying = _saved(tmp_path, "liar", hits, metrics={"top1": 99.0}, file="liar.json")
    got = gather({"a": [a], "liar": [lying]}, "top1")
    assert "its items do not give back its top1 (99.0)" in got.left_out["liar"]


def test_a_handful_of_items_gives_no_test_and_ties_share_a_rank(tmp_path):
    from probebench.stats.ranks import rank_tasks

    same = np.random.default_rng(1).random(60) < 0.7
    records = [_saved(tmp_path, name, same) for name in ("x", "y", "z")]
    ranks = rank_tasks(records, resamples=300)
    assert list(ranks["rank"]) == [1, 1, 1] and list(ranks.rank_lo) == [1, 1, 1]
    assert list(ranks.rank_hi) == [1, 1, 1], "identical encoders tie in every resample"
    tiny = [_saved(tmp_path / "t", name, [True] * 3) for name in ("x", "y")]
    ranks = rank_tasks(tiny, resamples=300)
    assert (
        ranks["rank"].isna().all()
        and (ranks.note == "3 shared item(s): fewer than 10, too few for a test").all()
    )
