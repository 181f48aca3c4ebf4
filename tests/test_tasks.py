"""The task contract: tasks as data (validated YAML), a toy dense task of a new shape through the whole
pipeline, probe constants in the config hash, and native geometry for every library."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import TINY_REGISTRY, call_cli, tiny_clip, use_registry

from probebench.data.formats.masks import load_label_map
from probebench.errors import UserError
from probebench.tasks import Context, Evaluation, Metric, Needs, Probe, register_probe
from probebench.tasks.catalog import load_tasks, parse_tasks
from probebench.tasks.knobs import Choice, Int, Knob, List

REGISTRY = TINY_REGISTRY.replace("tiny_random", "tiny_vit") + "  preprocess: {input_size: 64}\n"


def _label_under_cell_centres(mask: np.ndarray, geo) -> np.ndarray:
    """(grid_h * grid_w,) the label under each cell's centre, 255 where the centre is in the padding."""
    rows, cols = np.mgrid[: geo.grid_h, : geo.grid_w]
    xy = geo.grid_to_image(np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1))
    x, y = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    inside = (x < mask.shape[1]) & (y < mask.shape[0])
    out = np.full(len(xy), 255, dtype=mask.dtype)
    out[inside] = mask[y[inside], x[inside]]
    return out


@register_probe
class ToyDense(Probe):
    """A dense task of a new shape: two layers at once, a mask on the token grid, native geometry, no class
    labels, per-image outputs. Nearest class mean per patch on the concatenated layers, scored by mIoU."""

    name = "toy_dense"
    level = "part"
    description = "test-only: nearest class mean per patch over two layers, part masks on the grid"
    protocol_version = "1"

    def knobs(self) -> dict[str, Knob]:
        return {
            "layers": List([1, -1], item=Int(1, ge=-64, le=64), min_len=1),
            "geometry": Choice("native", ("native", "resize")),
        }

    def needs(self, knobs: dict) -> Needs:
        return Needs(
            tokens=("patches",), layers=tuple(knobs["layers"]), geometry=knobs["geometry"], labels=False
        )

    def primary(self, knobs: dict) -> Metric:
        return Metric("miou")

    def _patches(self, role, layers):
        grids = [role.store.load_grids(f"patches.L{layer}", role.rows) for layer in layers]
        geos = role.store.load_geometry(role.rows, f"patches.L{layers[-1]}")
        x, y = [], []
        for i, row in enumerate(role.rows):
            x.append(
                np.concatenate([g[i] for g in grids], axis=-1).reshape(-1, sum(g[i].shape[-1] for g in grids))
            )
            mask = load_label_map(role.dataset.root, role.dataset.samples[row])
            y.append(_label_under_cell_centres(mask, geos[i]))
        return np.concatenate(x).astype(np.float32), np.concatenate(y), [g.shape[:2] for g in grids[-1]]

    def evaluate(self, ctx: Context) -> Evaluation:
        xtr, ytr, _ = self._patches(ctx.roles["train"], ctx.layers)
        xte, yte, shapes = self._patches(ctx.roles["test"], ctx.layers)
        classes = np.unique(ytr[ytr != 255])
        means = np.stack([xtr[ytr == c].mean(0) for c in classes])
        pred = classes[((xte[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
        keep = yte != 255
        ious = [
            ((pred == c) & (yte == c) & keep).sum() / max(1, (((pred == c) | (yte == c)) & keep).sum())
            for c in np.unique(yte[keep])
        ]
        buf = io.BytesIO()
        np.savez(buf, pred=pred, shapes=np.array(shapes))
        return Evaluation(
            {"miou": float(np.mean(ious) * 100), "n_patches": int(keep.sum())},
            {"classes": classes.tolist(), "grids": sorted({tuple(s) for s in shapes})},
            {"predictions.npz": buf.getvalue()},
        )


@pytest.fixture
def registry(tmp_path, monkeypatch, tiny_embedded):
    return use_registry(tmp_path, monkeypatch, REGISTRY)


call = call_cli


def runs_dir():
    from probebench.paths import results_dir

    return results_dir() / "runs"


def run_with_tasks(monkeypatch, capsys, tmp_path, text: str, *args: str):
    """`probebench run ARGS --tasks FILE` with FILE holding `text`: (code, out, err, FILE)."""
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(text)
    return (*call(monkeypatch, capsys, "run", *args, "--tasks", str(tasks), "--workers", "0"), tasks)


def test_toy_dense_task_goes_through_pipeline_record_and_leaderboard(registry, tmp_path, monkeypatch, capsys):
    code, out, err, tasks = run_with_tasks(
        monkeypatch,
        capsys,
        tmp_path,
        "toy_parts: {probe: toy_dense, dataset: embedded, groups: [toy]}\n",
        "-e",
        "tiny_vit",
        "--task",
        "toy",
    )
    assert code == 0, err
    assert "done     tiny_vit x embedded x toy_parts: miou=" in out
    rec = json.loads((runs_dir() / "tiny_vit__embedded__toy_parts.json").read_text())
    assert (
        rec["schema_version"] == 5 and rec["task"]["level"] == "part" and rec["task"]["source"] == str(tasks)
    )
    assert rec["primary"]["name"] == "miou" and rec["primary"]["value"] == rec["metrics"]["miou"]
    assert rec["knobs"]["layer"] == [1, 11] and rec["knobs"]["geometry"] == {
        "mode": "native",
        "max_side": None,
    }
    assert rec["outputs"] == ["predictions.npz"]
    saved = np.load(runs_dir() / "tiny_vit__embedded__toy_parts" / "predictions.npz")
    assert saved["pred"].shape == (rec["metrics"]["n_patches"],)
    assert rec["probe"]["grids"] == [[4, 4]], "64 px synthetic images at patch 16 give 4x4 grids"
    assert 0 < rec["metrics"]["miou"] <= 100
    code, out, err = call(monkeypatch, capsys, "leaderboard")
    assert code == 0 and "toy_parts" in out and "miou" in out
    code, out, err = call(monkeypatch, capsys, "list", "tasks", "--tasks", str(tasks))
    line = next(x for x in out.splitlines() if x.startswith("toy_parts"))
    assert str(tasks) in line and "part" in line and "miou" in line
    assert next(x for x in out.splitlines() if x.startswith("knn ")).rstrip().endswith("shipped")


def test_a_user_task_entry_sets_knobs_and_its_result_says_so(registry, tmp_path, monkeypatch, capsys):
    code, out, err, _ = run_with_tasks(
        monkeypatch,
        capsys,
        tmp_path,
        "knn5: {probe: knn, dataset: embedded, knobs: {ks: [5]}}\n",
        "-e",
        "lite0",
        "-t",
        "knn5",
    )
    assert code == 0, err
    assert "knn5: top1_k5=" in out, "the primary metric follows the task's knobs"
    rec = json.loads((runs_dir() / "lite0__embedded__knn5.json").read_text())
    assert rec["knobs"]["task"]["ks"] == [5] and set(rec["metrics"]) >= {"top1_k5", "top1_k5_ci95"}
    assert "top1_k20" not in rec["metrics"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a: {probe: knm, dataset: embedded}", "unknown probe 'knm'; did you mean knn?"),
        ("a: {probe: knn, dataset: embedded, knobs: {kss: [5]}}", "unknown knob of probe 'knn' 'kss'"),
        ("a: {probe: knn, dataset: embedded, knobs: {ks: 5}}", "field 'knobs.ks': 5 is not a list"),
        ("a: {probe: knn, dataset: embedded, split: test}", "split names the split of a one-role probe"),
        ("a: {probe: knn}", "give dataset, or datasets for every role"),
        ("a: {probe: knn, dataset: embedded, splits: {val: val}}", "has roles train, test"),
        ("a: {probe: knn, dataset: embedded, colour: red}", "field 'colour': unknown field"),
        ("Bad: {probe: knn, dataset: embedded}", "names use lowercase letters"),
        (
            "a: {probe: linear, dataset: embedded, knobs: {variant: lasso}}",
            "field 'knobs.variant': 'lasso' is not known; give one of plain, bn",
        ),
        ("a: {probe: knn, dataset: embedded, knobs: {ks: [0]}}", "field 'knobs.ks': 0 is out of range"),
    ],
)
def test_bad_task_entries_get_one_line_naming_the_field(text, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace("?", r"\?")) as info:
        parse_tasks(text, "t.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("t.yaml: task")


def test_bad_tasks_file_is_one_line_and_exit_2_and_shipped_names_are_reserved(
    registry, tmp_path, monkeypatch, capsys
):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: {probe: knn, dataset: embedded, knobs: {kss: [5]}}\n")
    code, out, err = call(monkeypatch, capsys, "validate", "--tasks", str(bad))
    assert code == 2 and err.count("\n") == 1 and "kss" in err
    clash = tmp_path / "clash.yaml"
    clash.write_text("knn: {probe: knn, dataset: embedded}\n")
    code, out, err = call(monkeypatch, capsys, "run", "-e", "lite0", "-t", "knn", "--tasks", str(clash))
    assert code == 2 and "'knn' is a shipped task" in err
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x00\x01\xff\xfe")
    code, out, err = call(monkeypatch, capsys, "run", "-e", "lite0", "-t", "knn", "--tasks", str(binary))
    assert code == 2 and "not a text file" in err and "Traceback" not in err
    good = tmp_path / "good.yaml"
    good.write_text("k5: {probe: knn, dataset: embedded, knobs: {ks: [5]}}\n")
    code, out, err = call(monkeypatch, capsys, "validate", "--tasks", str(good))
    assert code == 0 and "ok: 1 tasks" in out


def test_shipped_tasks_are_data_with_groups_and_suites():
    tasks = load_tasks()
    assert [t for t in tasks if "object" in tasks[t].groups] == [
        "linear",
        "linear_bn",
        "attentive",
        "knn",
        "object_dense_retrieval",
        "object_segmentation",
    ]
    assert {tasks[t].level for t in tasks if "part" in tasks[t].groups} == {"part"}
    assert {tasks[t].level for t in tasks if "object" in tasks[t].groups} == {"object"}
    assert tasks["linear_bn"].knobs["variant"] == "bn" and tasks["knn_imagenet"].bindings["test"] == (
        "imagenet",
        "val",
    )
    assert all(t.source == "shipped" for t in tasks.values())


@pytest.mark.parametrize("encoder", ["lite0", "tiny_vit"])
def test_attentive_probe_on_an_inner_layer(registry, monkeypatch, capsys, encoder):
    """The attentive head takes its width from the probed layer (a CNN stage is narrower than the last)."""
    monkeypatch.setattr("probebench.learners.defaults.ATTENTIVE_EPOCHS", 3)
    monkeypatch.setattr("probebench.learners.defaults.ATTENTIVE_WARMUP_EPOCHS", 1)
    code, out, err = call(
        monkeypatch, capsys, "run", "-e", encoder, "--task", "attentive", "--layer", "2", "--workers", "0"
    )
    assert code == 0, err
    rec = json.loads((runs_dir() / f"{encoder}__embedded__attentive__layer2.json").read_text())
    assert rec["knobs"]["layer"] == 2 and rec["knobs"]["task"]["epochs"] == 3
    assert "top1=" in out and "x layer2" in out


def test_a_changed_probe_constant_or_knob_reruns_instead_of_reusing(registry, tmp_path, monkeypatch, capsys):
    def statuses(*extra):
        code, out, err = call(
            monkeypatch, capsys, "run", "-e", "lite0", "-t", "knn", "-t", "linear", "--workers", "0", *extra
        )
        assert code == 0, err
        done = [line.split() for line in out.splitlines() if line.startswith(("done", "skipped"))]
        return {f"{words[5].rstrip(':')}:{words[0]}" for words in done}

    assert statuses() == {"knn:done", "linear:done"}
    assert statuses() == {"knn:skipped", "linear:skipped"}
    monkeypatch.setattr("probebench.learners.defaults.KNN_TEMPERATURE", 0.1)
    assert statuses() == {"knn:done", "linear:skipped"}, "a module constant is part of the config hash"
    monkeypatch.setattr("probebench.learners.defaults.LINEAR_TOL", 1e-3)
    assert statuses() == {"knn:skipped", "linear:done"}
    rec = json.loads((runs_dir() / "lite0__embedded__linear.json").read_text())
    assert rec["knobs"]["task"]["tol"] == 1e-3 and rec["probe"]["tol"] == 1e-3
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("k7: {probe: knn, dataset: embedded, knobs: {ks: [7]}}\n")
    code, out, err = call(monkeypatch, capsys, "run", "-e", "lite0", "-t", "k7", "--tasks", str(tasks))
    assert "done" in out
    tasks.write_text("k7: {probe: knn, dataset: embedded, knobs: {ks: [9]}}\n")
    code, out, err = call(monkeypatch, capsys, "run", "-e", "lite0", "-t", "k7", "--tasks", str(tasks))
    assert "done" in out and "top1_k9" in out, "an edited knob in the tasks file re-runs the task"


def test_leaderboard_names_records_it_cannot_read_and_counts_them(registry, monkeypatch, capsys):
    code, out, err = call(monkeypatch, capsys, "run", "-e", "lite0", "-t", "knn", "--workers", "0")
    assert code == 0, err
    (runs_dir() / "old.json").write_text(json.dumps({"encoder": {"name": "x"}, "metrics": {}}))
    (runs_dir() / "cut.json").write_text('{"schema_version": 2, "enc')
    foreigners = {
        "empty": {},
        "list": [1, 2],
        "typed": {"schema_version": 5, "encoder": 5},
        "v3": {"schema_version": 3},
    }
    for name, foreign in foreigners.items():
        (runs_dir() / f"{name}.json").write_text(json.dumps(foreign))
    (runs_dir() / "binary.json").write_bytes(b"\xff\xfe\x00")
    code, out, err = call(monkeypatch, capsys, "leaderboard")
    assert code == 0 and "knn" in out and "top1/k=20" in out and "Traceback" not in err
    assert "old.json: record schema 1, expected 5" in err and "cut.json: not valid JSON" in err
    assert "v3.json: record schema 3, expected 5; re-run it" in err
    assert "binary.json: not UTF-8 text" in err
    assert "list.json: record schema none" in err and "typed.json: not a valid record" in err
    assert "left out 7 file(s) in runs/ that are not readable records" in err


def _tiny(kind: str, tmp_path):
    """A tiny random model of each library, trained size 64 px, patch 16, in its probebench adapter."""
    from probebench.encoders.base import Preprocess

    pre = Preprocess(64, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)
    if kind == "timm":
        import timm

        from probebench.encoders.timm_models import wrap_timm

        torch.manual_seed(0)
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)
        reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)
        reference.load_state_dict(model.state_dict())
        return wrap_timm(model, pre), lambda x: reference.forward_features(x)[:, 1:]
    if kind == "transformers":
        from transformers import ViTConfig, ViTModel

        from probebench.encoders.hf_models import HFViT

        cfg = ViTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            image_size=64,
            patch_size=16,
        )
        model = ViTModel(cfg, add_pooling_layer=False).eval()
        return HFViT(model, pre), lambda x: model.layernorm(model(pixel_values=x).last_hidden_state)[:, 1:]
    from probebench.encoders.clip_models import OpenClipViT

    return OpenClipViT(tiny_clip(tmp_path, "tiny-clip-native"), pre), None


@pytest.mark.parametrize("kind", ["timm", "transformers", "open_clip"])
def test_native_geometry_for_every_library(kind, tmp_path):
    """Each adapter takes a non-square input that is a multiple of its patch (native geometry), and at the
    trained size gives the library's own tokens (the position embedding is resampled only for other sizes,
    and open_clip's is put back after the call)."""
    enc, own = _tiny(kind, tmp_path)
    last = enc.num_blocks - 1
    odd = torch.randn(2, 3, 48, 80)
    feats = enc(odd, layers=[-1], keys=enc.has_keys)
    assert feats.patches[last].shape[:3] == (2, 3, 5) and torch.isfinite(feats.patches[last]).all()
    if enc.has_keys:
        assert feats.keys.shape[1:3] == (3, 5)
    square = torch.randn(2, 3, 64, 64)
    tokens = enc(square, layers=[-1]).patches[last].reshape(2, 16, -1)
    if own is not None:
        with torch.no_grad():
            torch.testing.assert_close(tokens, own(square), atol=1e-5, rtol=1e-5)
    if kind == "open_clip":
        assert enc.model.positional_embedding.shape[0] == 17, "the trained embedding is back after the call"
        again = enc(square, layers=[-1]).patches[last].reshape(2, 16, -1)
        assert torch.equal(tokens, again)


def test_native_extraction_keeps_each_images_grid_without_padding(tmp_path):
    """Images of different sizes in one shard: each row keeps its own grid and geometry, and reading a row
    back gives exactly the tokens of running that image alone."""
    from PIL import Image

    from probebench.data.formats.folder import read_image_folder
    from probebench.encoders.load import resolve_encoder
    from probebench.encoders.registry import parse_registry
    from probebench.extraction.extract import extract_features
    from probebench.extraction.request import ExtractionOptions, FeatureRequest

    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(64, 64), (100, 40), (37, 90), (64, 64)]):
        folder = tmp_path / "ds" / "test" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    ds = read_image_folder(tmp_path / "ds")
    entry = parse_registry(REGISTRY)["tiny_vit"]
    spec = resolve_encoder(entry)
    res = extract_features(
        spec,
        ds,
        FeatureRequest(tokens=("patches", "pooled"), geometry="native"),
        ExtractionOptions(num_workers=0),
    )
    rows = np.arange(len(ds))
    grids = res.store.load_grids("patches.L11", rows)
    geos = res.store.load_geometry(rows, "patches.L11")
    sizes = {(g.width, g.height): grid.shape[:2] for g, grid in zip(geos, grids, strict=True)}
    assert sizes == {(64, 64): (4, 4), (100, 40): (3, 7), (37, 90): (6, 3)}
    total = sum(g.shape[0] * g.shape[1] for g in grids)
    assert res.store.load("geometry").shape == (4, 11) and total == 16 + 21 + 18 + 16
    from probebench.encoders.load import build_encoder

    enc = build_encoder(spec)
    framing = enc.preprocess.framing("native", enc.patch_size)
    from probebench.data.loader import read_rgb

    for row in rows:
        x, geo = framing(read_rgb(str(ds.root / ds.samples[row].path)))
        alone = enc(x[None], layers=[-1]).patches[11][0].numpy()
        # the same tokens up to float16 rounding: a batch of one and a batch of two may take different
        # matmul kernels on some CPUs (last-bit differences); padding leaking into a grid would move them by
        # whole units
        np.testing.assert_allclose(alone, grids[row].astype(np.float32), rtol=2e-3, atol=2e-3)
        assert geo == geos[row]
    with pytest.raises(ValueError, match="different sizes"):
        res.store.load_tokens("patches.L11", rows)
    square = [i for i, g in enumerate(geos) if g.width == 64]  # two 64x64 photos in a shard of mixed sizes
    same = res.store.load_tokens("patches.L11", square)
    assert same.shape == (2, 16, grids[0].shape[-1]) and np.array_equal(
        same[1], grids[square[1]].reshape(16, -1)
    )


def class_folders(root, classes: list[str], per_class: int = 1) -> None:
    """root/{train,test}/<class>/<i>.png: small images whose colour depends on the class and the index."""
    from PIL import Image

    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 40), (i * 90, len(c) * 40, 0)).save(root / split / c / f"{i}.png")


def test_train_and_test_on_datasets_with_other_classes_is_one_line(registry, tmp_path, monkeypatch, capsys):
    (tmp_path / "ds.yaml").write_text(
        f"pets: {{format: image_folder, root: {tmp_path / 'pets'}}}\n"
        f"cars: {{format: image_folder, root: {tmp_path / 'cars'}}}\n"
    )
    class_folders(tmp_path / "pets", ["cat", "dog"])
    class_folders(tmp_path / "cars", ["dog", "van"])
    code, out, err, _ = run_with_tasks(
        monkeypatch,
        capsys,
        tmp_path,
        "cross: {probe: knn, datasets: {train: pets, test: cars}, knobs: {ks: [1]}}\n",
        "-e",
        "lite0",
        "-t",
        "cross",
        "--datasets",
        str(tmp_path / "ds.yaml"),
    )
    assert code == 2 and "different class lists" in err and err.count("\n") == 1


def test_dataset_given_as_a_folder_path_names_the_records(registry, tmp_path, monkeypatch, capsys):
    class_folders(tmp_path / "my_folder", ["a", "b"], per_class=2)
    code, out, err = call(
        monkeypatch,
        capsys,
        "run",
        "-e",
        "lite0",
        "-t",
        "knn",
        "--dataset",
        str(tmp_path / "my_folder"),
        "--workers",
        "0",
    )
    assert code == 0, err
    assert (runs_dir() / "lite0__my_folder__knn.json").is_file()


def test_the_lazy_probe_table_says_what_each_probe_class_says():
    """`PROBES` names each shipped probe without importing it; its level and protocol version (read by the
    catalogue and the leaderboard) must be the class's own, or a bumped protocol would go unnoticed."""
    import importlib

    from probebench.tasks.probes import PROBES

    for name, ref in PROBES.items():
        module, cls = ref.target.split(":")
        probe = getattr(importlib.import_module(module), cls)
        assert (probe.name, probe.level, probe.protocol_version) == (name, ref.level, ref.protocol_version)


def test_listing_tasks_and_the_leaderboard_do_not_import_torch():
    """The catalogue validates every task against its probe's knobs, and the leaderboard reads protocol
    versions: neither may build anything (they took 3.5 to 3.9 s when they imported torch)."""
    import subprocess
    import sys

    code = (
        "import sys, atexit; atexit.register(lambda: print('torch' in sys.modules)); "
        "from probebench.results import tables; tables._current_protocol('knn'); "
        "sys.argv = ['probebench', 'list', 'tasks']; from probebench.cli import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "saliency_ecssd" in done.stdout and done.stdout.splitlines()[-1] == "False", "torch was imported"
