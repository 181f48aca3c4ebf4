"""Extraction throughput, side by side in one run: is the harness as fast as the model allows?

Phases, same model (random-weight ViT-S/16 at 224 px), same batch size, same images:
  (a) raw   - the model's forward pass on pre-made tensors (no decoding, no cache);
  (b) cold  - `probebench.extraction.extract` from image files into an empty feature cache (decode + resize
              in workers);
  (c) warm  - the same call again, finding everything cached (timed with resolving the weights and
              fingerprinting the dataset, as a re-run does; Python start-up and imports excluded).
Targets (issue 2): b/a >= 0.9 in throughput, c at least 50x faster than b. Also reports peak resident memory
of (b), the process plus its DataLoader workers. Each phase runs in its own subprocess so that peak memory is
the phase's own.

--geometry: cold extraction of the same real photos (../shared/data/carparts test: 100 car photos of mixed
sizes, 194 to 1600 px) in `resize` geometry (224 px centre crop) and in `native` geometry (each photo at its
own size, longer side capped at --max-side, padded to the patch size; equal sizes batched together), same
model and batch size: images and tokens per second, and the native/resize ratio (issue 8).

    python benchmarks/extract.py [--images 256] [--batch-size 32]
    python benchmarks/extract.py --geometry [--max-side 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENTRY = """bench_vits16:
  family: control
  method: random init
  arch: ViT-S/16
  source: {kind: random, arch: vit_small_patch16_224, seed: 0}
"""


def make_images(folder: Path, n: int) -> None:
    """JPEG photos-like files (noise + gradients) at 320x256, so decode and resize do real work."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        split, cls = ("train" if i % 4 else "test"), f"c{i % 5}"
        d = folder / split / cls
        d.mkdir(parents=True, exist_ok=True)
        base = np.linspace(0, 255, 320)[None, :, None] * rng.random(3)
        img = np.clip(base + rng.normal(0, 40, (256, 320, 3)), 0, 255).astype("uint8")
        Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)


def phase(name: str, folder: Path, batch: int) -> dict:
    import timm  # noqa: F401 - imported before timing: (c) excludes imports, and resolve_encoder() imports timm lazily
    import torch

    from probebench.data.formats.folder import read_image_folder as image_folder
    from probebench.encoders.load import build_encoder, resolve_encoder
    from probebench.encoders.registry import parse_registry
    from probebench.extraction.extract import extract_features
    from probebench.extraction.request import ExtractionOptions, FeatureRequest

    entry = parse_registry(ENTRY)["bench_vits16"]
    if name == "raw":
        ds = image_folder(folder)
        enc = build_encoder(resolve_encoder(entry))
        x = torch.randn(batch, 3, 224, 224)
        with torch.inference_mode():
            enc.model.forward_features(x[:2])  # warm-up: first-call allocations are not throughput
            t = time.perf_counter()
            done = 0
            while done < len(ds):
                n = min(batch, len(ds) - done)
                enc.model.forward_features(x[:n])
                done += n
            seconds = time.perf_counter() - t
    else:
        enc = (
            build_encoder(resolve_encoder(entry)) if name == "cold" else None
        )  # building a model is not extraction
        if enc is not None:
            with torch.inference_mode():
                enc.model.forward_features(torch.randn(2, 3, 224, 224))  # same warm-up as raw
        # Timed like a re-run: resolving the weights and fingerprinting the dataset are part of it.
        t = time.perf_counter()
        ds = image_folder(folder)
        res = extract_features(
            resolve_encoder(entry),
            ds,
            FeatureRequest(),
            ExtractionOptions(batch_size=batch, progress=False),
            encoder=enc,
        )
        seconds = time.perf_counter() - t
        assert res.cached == (name == "warm"), f"{name}: cached={res.cached}"
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "phase": name,
        "images": len(ds),
        "seconds": seconds,
        "images_per_s": len(ds) / seconds,
        "peak_rss_mb": own,
        "peak_rss_workers_mb": kids,
    }


CARPARTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "carparts"


def geometry_phase(mode: str, batch: int, max_side: int) -> dict:
    import numpy as np
    import timm  # noqa: F401 - imported before timing

    from probebench.data.formats.coco import read_coco
    from probebench.encoders.load import build_encoder, resolve_encoder
    from probebench.encoders.registry import parse_registry
    from probebench.extraction.extract import extract_features
    from probebench.extraction.request import ExtractionOptions, FeatureRequest

    entry = parse_registry(ENTRY)["bench_vits16"]
    ds = read_coco(CARPARTS, "carparts")
    ds.samples = [s for s in ds.samples if s.split == "test"]
    enc = build_encoder(resolve_encoder(entry))
    req = FeatureRequest(
        tokens=("cls", "patches"), geometry=mode, max_side=max_side if mode == "native" else None
    )
    t = time.perf_counter()
    res = extract_features(
        resolve_encoder(entry), ds, req, ExtractionOptions(batch_size=batch, progress=False), encoder=enc
    )
    seconds = time.perf_counter() - t
    grids = res.store.load_grids("patches.L11", np.arange(len(ds)))
    tokens = sum(g.shape[0] * g.shape[1] for g in grids)
    return {"mode": mode, "images": len(ds), "seconds": seconds, "tokens": tokens}


def compare_geometry(batch: int, max_side: int) -> None:
    import torch

    if not CARPARTS.is_dir():
        print(f"skipped: {CARPARTS} is absent (the real photos this comparison needs)")
        return
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PROBEBENCH_HOME": str(Path(tmp) / "home")}
        for mode in ("resize", "native"):
            cmd = [sys.executable, __file__, "--geometry-phase", mode, "--batch-size", str(batch)]
            cmd += ["--max-side", str(max_side)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}"
    )
    print(
        f"model: ViT-S/16 random weights, batch {batch}; "
        f"data: carparts test, {out['resize']['images']} real photos"
    )
    for mode, what in (("resize", "224 px centre crop"), ("native", f"own size, longer side <= {max_side}")):
        r = out[mode]
        print(
            f"  {mode:6s} ({what:32s}) {r['seconds']:7.2f} s  {r['images'] / r['seconds']:6.2f} img/s  "
            f"{r['tokens'] / r['images']:7.1f} tokens/img  {r['tokens'] / r['seconds']:8.0f} tokens/s"
        )
    a, b = out["resize"], out["native"]
    print(
        f"native/resize: {b['images'] / b['seconds'] / (a['images'] / a['seconds']):.2f}x images/s, "
        f"{b['tokens'] / b['seconds'] / (a['tokens'] / a['seconds']):.2f}x tokens/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--geometry", action="store_true", help="compare native and resize geometry")
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--phase", choices=["raw", "cold", "warm"], help=argparse.SUPPRESS)
    ap.add_argument("--geometry-phase", choices=["resize", "native"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.geometry_phase:
        print(json.dumps(geometry_phase(args.geometry_phase, args.batch_size, args.max_side)))
        return
    if args.geometry:
        compare_geometry(args.batch_size, args.max_side)
        return
    if args.phase:
        print(json.dumps(phase(args.phase, args.folder, args.batch_size)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        make_images(folder, args.images)
        env = {**os.environ, "PROBEBENCH_HOME": str(Path(tmp) / "home")}
        out = {}
        for name in ("raw", "cold", "warm"):
            cmd = [sys.executable, __file__, "--phase", name, "--folder", str(folder)]
            cmd += ["--batch-size", str(args.batch_size)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    import torch

    a, b, c = out["raw"], out["cold"], out["warm"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}"
    )
    print(f"model: ViT-S/16 random weights, 224 px, batch {args.batch_size}, {a['images']} JPEGs 320x256")
    for p in (a, b, c):
        print(
            f"  ({'abc'[['raw', 'cold', 'warm'].index(p['phase'])]}) {p['phase']:5s} {p['seconds']:8.3f} s "
            f"{p['images_per_s']:9.1f} img/s"
        )
    print(f"(b)/(a) throughput: {b['images_per_s'] / a['images_per_s']:.2f}x   (target >= 0.90)")
    print(f"(c) vs (b) speed-up: {b['seconds'] / c['seconds']:.0f}x   (target >= 50)")
    rss, workers = b["peak_rss_mb"], b["peak_rss_workers_mb"]
    print(f"peak RSS of (b): {rss:.0f} MB main process, {workers:.0f} MB largest worker")


if __name__ == "__main__":
    main()
