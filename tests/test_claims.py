"""The papers' claims judged on records: a known family difference is supported, a confounded architecture is
said and the within-architecture comparison shown, a missing family leaves a claim untested, a bad claims
file is one line."""

from __future__ import annotations

import numpy as np
import pytest

from probebench.errors import UserError
from probebench.stats.claims import Claim, judge_claims, load_claims
from probebench.stats.items import ItemScores
from tests.conftest import make_record, save_with_items

CLAIM = Claim(
    id="sup", paper="zhu2023", claim="supervised above", levels=["object"], higher=["supervised"],
    lower=["contrastive"],
)  # fmt: skip


def _record(root, name: str, family: str, accuracy: float, cnn: bool = False, seed: int = 0):
    """A linear record of `name` whose 400 test images are hit with probability `accuracy`, items beside."""
    hits = np.random.default_rng(seed).random(400) < accuracy
    items = ItemScores()
    items.add("top1", "mean", "test", [f"img{i:03d}.jpg" for i in range(400)], hits)
    record = make_record(name, "linear", {"top1": 100.0 * float(hits.mean())}, family=family)
    facts = record.encoder.facts.model_copy(update={"has_keys": not cnn})
    encoder = record.encoder.model_copy(update={"facts": facts})
    return save_with_items(root, record.model_copy(update={"encoder": encoder}), items)


def test_a_clear_family_difference_is_supported_and_a_confounded_one_says_so(tmp_path):
    records = [
        _record(tmp_path, "sup_cnn", "supervised", 0.92, cnn=True, seed=1),
        _record(tmp_path, "sup_vit", "supervised", 0.90, seed=2),
        _record(tmp_path, "sup_vit2", "supervised", 0.91, seed=5),
        _record(tmp_path, "con_a", "contrastive", 0.60, seed=3),
        _record(tmp_path, "con_b", "contrastive", 0.62, seed=4),
    ]
    per_task, summary = judge_claims(records, [CLAIM], resamples=1000)
    (row,) = per_task.itertuples()
    assert row.verdict == "supported" and row.estimate == pytest.approx(
        np.mean([r.primary.value for r in records[:3]]) - np.mean([r.primary.value for r in records[3:]])
    )
    assert row.architecture == "CNN/ViT vs ViT" and "family and architecture are confounded" in row.note
    assert row.within_architecture.startswith("ViT: +") and row.within_architecture.endswith("supported")
    assert summary.iloc[0].verdict == "supported" and summary.iloc[0].supported == 1
    # the same claim the other way round is contradicted
    flipped = CLAIM.model_copy(update={"higher": ["contrastive"], "lower": ["supervised"]})
    assert judge_claims(records, [flipped], resamples=500)[0].iloc[0].verdict == "contradicted"


def test_a_missing_family_leaves_the_claim_untested(tmp_path):
    records = [_record(tmp_path, "sup_vit", "supervised", 0.9)]
    per_task, summary = judge_claims(records, [CLAIM], resamples=200)
    assert per_task.empty and summary.iloc[0].verdict == "untested"
    assert summary.iloc[0].note == "no contrastive encoder has object-level results"


def test_the_shipped_claims_load_and_a_bad_file_is_one_line(tmp_path):
    shipped = [c.id for c in load_claims()]
    assert shipped == ["supervised-objects", "self-supervised-parts", "combination-best"]
    path = tmp_path / "claims.yaml"
    head = "- {id: x, claim: c, "
    for text, said in (
        ("paper: zhu2023, levels: [object], higher: [nope], lower: [mim]}", "unknown family 'nope'"),
        ("paper: nobody, levels: [object], higher: [mim], lower: [supervised]}", "unknown paper 'nobody'"),
        ("paper: zhu2023, levels: [pixels], higher: [mim], lower: [supervised]}", "levels.0"),
        ("paper: zhu2023, levels: [object], higher: [mim], lower: [mim]}", "disjoint"),
    ):
        path.write_text(head + text)
        with pytest.raises(UserError, match=said):
            load_claims(path)
    path.write_text("{id: x}")
    with pytest.raises(UserError, match="expected a list of claims"):
        load_claims(path)
