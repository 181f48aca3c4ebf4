"""The registry: the shipped file validates and builds; bad entries give one line naming entry and field."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from probebench.encoders.registry import family_names, get_entry, load_registry, parse_registry
from probebench.errors import UserError

REPO = Path(__file__).resolve().parents[1]

GOOD = """
tiny:
  family: control
  method: random init
  arch: ViT-Ti/16
  source: {kind: random, arch: vit_tiny_patch16_224, seed: 1}
"""


def test_shipped_registry_validates_and_covers_the_papers_encoders():
    reg = load_registry(REPO / "encoders.yaml")
    paper = {"deit_vitb", "mocov3_vitb", "dino_vitb", "beit_vitb", "mae_vitb", "cae_vitb", "ibot_vitb"}
    assert paper <= set(reg)
    assert {
        "clip_vitb",
        "dinov2_vitb",
        "random_vitb",
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "mobilenetv2",
    } <= set(reg)
    families = {e.family for e in reg.values()}
    assert set(family_names()) - {"unlabelled"} <= families, "one encoder per family at least"
    assert reg["beit_vitb"].notes and "22k" in reg["beit_vitb"].notes  # the recorded deviation
    for name in ("mocov3_vitb", "cae_vitb", "ibot_vitb"):
        assert reg[name].source.kind == "checkpoint"
    assert reg["cae_vitb"].source.url is None and reg["cae_vitb"].source.manual


def _build_meta(entry):
    """The entry's architecture with no weights, on the meta device (no memory, no download)."""
    import open_clip
    import timm
    from transformers import AutoConfig, AutoModel

    src = entry.source
    with torch.device("meta"):
        if src.kind == "timm":
            return timm.create_model(src.model, pretrained=False)
        if src.kind == "transformers":
            return AutoModel.from_config(AutoConfig.for_model(src.model_type))
        if src.kind == "open_clip":
            return open_clip.create_model(src.model, pretrained=None, device="meta")
        return timm.create_model(src.arch, pretrained=False, **src.arch_kwargs)


@pytest.mark.parametrize("name", sorted(load_registry(REPO / "encoders.yaml")))
def test_every_shipped_architecture_builds(name):
    entry = load_registry(REPO / "encoders.yaml")[name]
    model = _build_meta(entry)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("seed: 1", "seed: one"), "entry 'tiny', field 'source.seed'"),
        (GOOD.replace("family: control", "family: selfsup"), "entry 'tiny', field 'family'"),
        (GOOD + "  colour: red\n", "entry 'tiny', field 'colour': unknown field"),
        (
            GOOD.replace("  method: random init\n", ""),
            "entry 'tiny', field 'method': required field is missing",
        ),
        (GOOD.replace("kind: random", "kind: ftp"), "entry 'tiny', field 'source'"),
        (GOOD.replace("tiny:", "Tiny-1:"), "entry 'Tiny-1': names use lowercase"),
        (GOOD + GOOD, "duplicate name 'tiny'"),
        ("tiny: [1, 2", "not valid YAML"),
        (
            GOOD.replace(
                "source: {kind: random, arch: vit_tiny_patch16_224, seed: 1}",
                "source: {kind: package, package: p, file: f, sha256: abc, arch: a}",
            ),
            "field 'source.sha256'",
        ),
    ],
)
def test_bad_entries_name_entry_and_field(text, expected):
    with pytest.raises(UserError) as exc:
        parse_registry(text, "reg.yaml")
    msg = str(exc.value)
    assert expected in msg and "\n" not in msg


def test_validate_cli_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from probebench import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD + "  colour: red\n")
    monkeypatch.setattr(sys, "argv", ["probebench", "validate", str(bad)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "colour" in err and "Traceback" not in err

    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    monkeypatch.setattr(sys, "argv", ["probebench", "validate", str(good)])
    cli.main()
    assert "ok: 1 encoders" in capsys.readouterr().out


def test_unknown_encoder_suggests_close_matches():
    reg = load_registry(REPO / "encoders.yaml")
    with pytest.raises(UserError, match="did you mean.*mae_vitb"):
        get_entry(reg, "mae_vit")
