"""The encoders researchers compare today, end to end: a model named directly, its protocol card, the
families table, one evaluation resolution per suite, the model's own pooling head, per-entry precision, and
one-line refusals for what probebench cannot read."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_REGISTRY, call_cli, hf_snapshot, use_registry
from safetensors.torch import save_file

from probebench.errors import UserError

DINOV3 = "vit_small_patch16_dinov3.lvd1689m"


def _hub_timm(name: str, **kwargs) -> torch.nn.Module:
    """`name` with random weights in the Hugging Face cache, where `timm.create_model(pretrained=True)`
    and probebench's resolver look for it (the real layout, loaded with HF_HUB_OFFLINE=1)."""
    from probebench.encoders.sources import create_timm_model

    model = create_timm_model(name, seed=0, pretrained=False, **kwargs)
    snap = hf_snapshot(f"timm/{name}", commit="d" * 40)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, snap / "model.safetensors")
    return model


@pytest.fixture
def registry(tmp_path, monkeypatch, tiny_embedded):
    return use_registry(tmp_path, monkeypatch, TINY_REGISTRY)


def test_a_model_named_directly_runs_end_to_end_and_keeps_its_exact_name(registry, monkeypatch, capsys):
    """DINOv3 by its timm name, no entry: RoPE keys and class attention reach discovery (rotated, and
    un-rotated as a knob), the record names the model exactly, and the file names are a safe slug plus a
    hash."""
    _hub_timm(DINOV3)
    name = f"timm:{DINOV3}"
    tasks = registry.parent / "tasks.yaml"
    tasks.write_text(
        "disc_rotated:\n  probe: discovery\n  dataset: embedded\n"
        "  knobs: {methods: [lost, tokencut, dinoseg]}\n"
        "disc_unrotated:\n  probe: discovery\n  dataset: embedded\n"
        "  knobs: {methods: [lost, tokencut], rope_keys: unrotated}\n"
    )
    args = [
        "-t",
        "knn",
        "-t",
        "disc_rotated",
        "-t",
        "disc_unrotated",
        "--tasks",
        str(tasks),
        "--workers",
        "0",
    ]
    code, out, err = call_cli(monkeypatch, capsys, "run", "-e", name, *args)
    assert code == 0, err
    from probebench.paths import features_dir, results_dir

    runs = {p.name.rsplit("__", 1)[1]: p for p in (results_dir() / "runs").glob("*.json")}
    assert sorted(p.name for p in runs.values()) == [
        f"timm-vit-small-patch16-dinov3-lvd1689m-bf884457__embedded__{t}.json"
        for t in ("disc_rotated", "disc_unrotated", "knn")
    ]
    assert not any(c in p.name for p in features_dir().rglob("*") for c in ":/@")
    knn = json.loads(runs["knn.json"].read_text())
    assert knn["encoder"]["name"] == name and knn["encoder"]["family"] == "unlabelled"
    assert knn["encoder"]["facts"]["prefix_tokens"] == ["class", *["register"] * 4]
    assert knn["knobs"]["feature"] == "cls"  # the class token, never a register
    assert "timm's pretrained config" in knn["knobs"]["resolution"]["source"]
    assert knn["knobs"]["preprocess_from"]["mean"] == f"timm's pretrained config of {DINOV3}"
    rotated = json.loads(runs["disc_rotated.json"].read_text())
    assert rotated["encoder"]["facts"]["keys_kind"] == "rotated by the block's RoPE"
    assert rotated["probe"]["keys"] == "keys"
    assert rotated["probe"]["attention"] and not rotated["probe"]["skipped_methods"]
    plain = json.loads(runs["disc_unrotated.json"].read_text())
    assert plain["encoder"]["facts"]["keys_kind"] == "before RoPE (un-rotated)"
    assert plain["roles"]["test"]["cache_key"] != rotated["roles"]["test"]["cache_key"]
    assert name in (results_dir() / "leaderboard.csv").read_text()
    # the same name again is the same records: nothing is recomputed
    code, out, _ = call_cli(monkeypatch, capsys, "run", "-e", name, *args)
    assert code == 0 and out.count("skipped") == 3


REGISTERS_ONLY = """
reg_gap:
  family: control
  method: random init
  arch: ViT/16 + 4 registers, no class token
  source:
    {kind: random, arch: vit_medium_patch16_reg4_gap_256, seed: 0, arch_kwargs: {depth: 2, img_size: 64}}
  preprocess: {input_size: 64}
"""


def test_a_model_without_a_class_token_reads_pooled_patches_and_its_own_head(
    tmp_path, monkeypatch, capsys, tiny_embedded
):
    """Registers and no class token (timm's reg4_gap, two blocks): the default feature is the mean of the
    patches, the model's pooling head is `--feature head`, `--feature cls` is refused, and class-attention
    methods are skipped with the reason in the record."""
    use_registry(tmp_path, monkeypatch, REGISTERS_ONLY)
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("disc:\n  probe: discovery\n  dataset: embedded\n  knobs: {methods: [lost, dinoseg]}\n")
    run = ("run", "-e", "reg_gap", "--tasks", str(tasks), "--workers", "0")
    code, _, err = call_cli(monkeypatch, capsys, *run, "-t", "knn", "-t", "disc")
    assert code == 0, err
    from probebench.paths import results_dir

    runs = results_dir() / "runs"
    rec = json.loads((runs / "reg_gap__embedded__knn.json").read_text())
    assert rec["knobs"]["feature"] == "pooled" and rec["encoder"]["facts"]["class_token"] is False
    assert rec["encoder"]["facts"]["prefix_tokens"] == ["register"] * 4
    disc = json.loads((runs / "reg_gap__embedded__disc.json").read_text())
    assert (
        disc["probe"]["methods"] == ["lost"]
        and "no class token" in disc["probe"]["skipped_methods"]["dinoseg"]
    )
    code, _, err = call_cli(monkeypatch, capsys, *run, "-t", "knn", "--feature", "head")
    assert code == 0, err
    head = json.loads((runs / "reg_gap__embedded__knn__feature-head.json").read_text())
    assert head["knobs"]["feature"] == "head"
    assert head["encoder"]["facts"]["pooling"].startswith("timm forward_head")
    assert head["config_hash"] != rec["config_hash"]
    code, _, err = call_cli(monkeypatch, capsys, *run, "-t", "knn", "--feature", "cls")
    assert code == 2 and "no class token (registers are not one)" in err and err.count("\n") == 1


def test_the_head_feature_is_the_models_own_forward_head():
    from probebench.encoders.base import Preprocess
    from probebench.encoders.sources import create_timm_model
    from probebench.encoders.timm_models import wrap_timm

    for arch in ("vit_base_patch16_siglip_224", "vit_medium_patch16_reg4_gap_256", "vit_tiny_patch16_224"):
        model = create_timm_model(arch, seed=0, pretrained=False, depth=2).eval()
        enc = wrap_timm(model, Preprocess(224, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3))
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            want = model.forward_head(model.forward_features(x), pre_logits=True)
        for norm in (True, False):
            torch.testing.assert_close(enc(x, [0], norm=norm, head=True).head, want, atol=2e-5, rtol=1e-5)


def test_protocol_card_names_what_a_run_reads(monkeypatch, capsys):
    code, out, err = call_cli(monkeypatch, capsys, "show", "dinov3_vits16")
    assert code == 0, err
    card = dict(line.split(None, 1) for line in out.splitlines())
    assert card["prefix"].startswith("tokens") or "prefix tokens" in out
    assert "class, register x4" in out
    assert "rotated by the block's RoPE" in card["keys"]
    assert "224, from the registry entry's preprocess" in card["preprocess.input_size"]
    assert "timm's pretrained config of vit_small_patch16_dinov3.lvd1689m" in card["preprocess.mean"]
    assert "fp32 everywhere" in card["precision"]
    code, out, _ = call_cli(monkeypatch, capsys, "show", "siglip2_vitb16")
    assert "none: no class token" in out and "attention pooler" in out and "pooled (default" in out
    code, out, _ = call_cli(monkeypatch, capsys, "show", "beit_vitb")  # no cache: nothing is guessed
    assert code == 0 and "preprocess  unknown" in out.replace("preprocess   ", "preprocess  ")


def test_cached_weights_that_do_not_fit_the_architecture_are_one_line(registry, monkeypatch, capsys):
    """A cache holding another architecture's file under the model's name (a broken or mixed-up cache)."""
    name = "vit_little_patch16_reg4_gap_256.sbb_in1k"
    _hub_timm(name, depth=2)
    code, _, err = call_cli(monkeypatch, capsys, "run", "-e", f"timm:{name}", "-t", "knn", "--workers", "0")
    assert code == 2 and "do not fit" in err and "models--timm--" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["show", "timm:no_such_vit_anywhere"], "timm has no model 'no_such_vit_anywhere'"),
        (["show", "hf:justone"], "a Hugging Face model is hf:ORG/REPO"),
        (["show", "open_clip:ViT-B-16"], "open_clip:MODEL/PRETRAINED_TAG"),
        (["show", "torch:resnet50"], "name a model directly as timm:NAME"),
        (["show", "timm:vit_small_patch16_224", "--family", "nope"], "'nope' is not a family of"),
        (["run", "-e", "timm:no_such_vit_anywhere", "-t", "knn"], "timm has no model"),
        (["run", "-e", "open_clip:ViT-B-16/no_such_tag", "-t", "knn"], "no pretrained tag 'no_such_tag'"),
    ],
)
def test_unknown_models_are_one_line_exit_2(registry, monkeypatch, capsys, args, expected):
    code, _, err = call_cli(monkeypatch, capsys, *args)
    assert code == 2 and expected in err and err.strip().count("\n") == 0 and "Traceback" not in err


def test_a_layout_the_adapter_does_not_understand_is_refused():
    from probebench.encoders.base import Preprocess
    from probebench.encoders.timm_models import wrap_timm

    model = torch.nn.Module()
    model.patch_embed, model.blocks = torch.nn.Identity(), torch.nn.ModuleList()
    model.cls_token, model.reg_token, model.num_prefix_tokens = torch.zeros(1, 1, 8), None, 3
    with pytest.raises(UserError, match="3 prefix tokens, of which probebench can name only"):
        wrap_timm(model, Preprocess(224, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3))


def test_families_are_data_a_user_extends_by_one_entry(tmp_path, monkeypatch):
    import probebench.encoders.registry as reg
    from probebench.config import shipped_file

    shipped = reg.default_families_path().read_text()
    extended = tmp_path / "families.yaml"
    extended.write_text(shipped + "video:\n  description: Trained on video.\n  paper: null\n")
    monkeypatch.setenv("PROBEBENCH_FAMILIES", str(extended))
    entry = (
        "v:\n  family: video\n  method: m\n  arch: a\n  source: {kind: random, arch: vit_tiny_patch16_224}\n"
    )
    assert reg.parse_registry(entry)["v"].family == "video"
    assert reg.family_names()[-1] == "video"
    monkeypatch.setenv("PROBEBENCH_FAMILIES", str(shipped_file("families.yaml", "UNSET_VARIABLE")))
    with pytest.raises(UserError, match="'video' is not a family of families.yaml"):
        reg.parse_registry(entry)
    from probebench.results.tables import family_order

    assert family_order("supervised") == 0 and family_order("nobody") == len(reg.family_names())


def test_papers_suite_fixes_224_and_the_default_suite_keeps_each_encoders_size():
    """224 px for every resized task, whole-image tasks at their papers' size (open-hummingbird-eval's 512),
    native-geometry tasks at each image's own."""
    from probebench.tasks import get_suite

    for task in get_suite("papers"):
        if task.needs.geometry == "resize":
            assert task.resolution == 224, task.name
        elif task.needs.geometry == "stretch":
            assert task.resolution == (512 if task.probe.name == "object_dense_retrieval" else 224), task.name
        else:
            assert task.resolution is None, task.name
    assert all(t.resolution is None for t in get_suite("default"))


def test_a_fixed_resolution_is_what_the_encoder_reads_and_the_record_says_so(
    tmp_path, monkeypatch, capsys, tiny_embedded
):
    """The same encoder at its own size (96, from its entry) and at a size a task fixes (32): two cache
    entries, each record saying which policy applied."""
    use_registry(tmp_path, monkeypatch, TINY_REGISTRY.replace("{input_size: 64}", "{input_size: 96}"))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("knn_at_32:\n  probe: knn\n  dataset: embedded\n  resolution: 32\n")
    code, _, err = call_cli(
        monkeypatch,
        capsys,
        "run",
        "-e",
        "tiny_random",
        "-t",
        "knn",
        "-t",
        "knn_at_32",
        "--tasks",
        str(tasks),
        "--workers",
        "0",
    )
    assert code == 0, err
    from probebench.paths import results_dir

    runs = results_dir() / "runs"
    own = json.loads((runs / "tiny_random__embedded__knn.json").read_text())
    fixed = json.loads((runs / "tiny_random__embedded__knn_at_32.json").read_text())
    assert (
        own["knobs"]["resolution"]["input_size"] == 96 and own["knobs"]["resolution"]["policy"] == "encoder"
    )
    assert "registry entry" in own["knobs"]["resolution"]["source"]
    assert fixed["knobs"]["resolution"] == {"input_size": 32, "policy": "task", "source": None}
    assert fixed["knobs"]["preprocess"]["input_size"] == 32
    assert own["roles"]["test"]["cache_key"] != fixed["roles"]["test"]["cache_key"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("disc:\n  probe: discovery\n  dataset: embedded\n  resolution: 224\n")
    code, _, err = call_cli(
        monkeypatch, capsys, "run", "-e", "tiny_random", "-t", "disc", "--tasks", str(bad)
    )
    assert code == 2 and "reads images at their own size" in err


def test_precision_is_per_entry():
    from probebench.extraction.request import _precision

    cuda = torch.device("cuda")
    assert _precision(cuda, "fp32") == ("fp32", None)
    assert _precision(cuda, "fp16") == ("fp16-autocast", torch.float16)
    assert _precision(cuda, "bf16") == ("bf16-autocast", torch.bfloat16)
    assert _precision(torch.device("cpu"), "bf16") == ("fp32", None)  # the CPU always runs fp32
    from probebench.encoders.registry import load_registry

    assert load_registry()["dinov3_vits16"].precision == "fp32"


def test_file_names_of_directly_named_models_are_safe_and_distinct():
    from probebench.paths import slug

    assert slug("dinov3_vits16") == "dinov3_vits16"  # registry names stay as they are
    a, b = slug("hf:facebook/dinov2-small@main"), slug("hf:facebook/dinov2-small@MAIN")
    assert a != b and a.startswith("hf-facebook-dinov2-small-main-") and not set(a) & set(":/@")
    assert slug("timm:" + "x" * 300).count("x") == 43  # fits a file name: 48 readable characters at most


def test_openai_clip_runs_the_quickgelu_it_was_trained_with():
    """open_clip builds `ViT-B-32` with GELU and only warns that the 'openai' weights used QuickGELU; the
    loader and the card build it with QuickGELU (a different activation is a different model)."""
    from probebench.encoders.card import bare_encoder
    from probebench.encoders.load import resolve_encoder
    from probebench.encoders.registry import load_registry
    from probebench.encoders.sources import quick_gelu

    assert quick_gelu("ViT-B-32", "openai") and not quick_gelu("ViT-B-16", "laion2b_s34b_b88k")
    entry = load_registry()["clip_vitb32"]
    enc = bare_encoder(resolve_encoder(entry, strict_available=False, download=False))
    assert {type(m).__name__ for m in enc.model.modules() if "GELU" in type(m).__name__} == {"QuickGELU"}


def test_a_token_count_its_prefix_layout_does_not_explain_is_refused():
    """Four registers the adapter could not see (simulated): one line, never a mis-sliced grid."""
    from transformers import AutoConfig, AutoModel

    from probebench.encoders.base import Preprocess
    from probebench.encoders.hf_models import HFViT

    cfg = AutoConfig.for_model(
        "dinov2_with_registers",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
        num_register_tokens=4,
    )
    enc = HFViT(AutoModel.from_config(cfg).eval(), Preprocess(32, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3))
    assert enc.prefix_tokens == ("class", "register", "register", "register", "register")
    enc._prefix = ("class",)
    with pytest.raises(UserError, match="9 tokens for a 2x2 grid and 1 prefix tokens"):
        enc(torch.randn(1, 3, 32, 32), [-1])
