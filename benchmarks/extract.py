"""Extraction throughput, side by side in one run: is the harness as fast as the model allows?

Phases, same model (random-weight ViT-S/16 at 224 px), same batch size, same images:
  (a) raw   - the model's forward pass on pre-made tensors (no decoding, no cache);
  (b) cold  - `probebench.extract` from image files into an empty feature cache (decode + resize in workers);
  (c) warm  - the same call again, finding everything cached (timed with resolving the weights and
              fingerprinting the dataset, as a re-run does; Python start-up and imports excluded).
Targets (issue 2): b/a >= 0.9 in throughput, c at least 50x faster than b. Also reports peak resident memory
of (b), the process plus its DataLoader workers. Each phase runs in its own subprocess so that peak memory is
the phase's own.

    python benchmarks/extract.py [--images 256] [--batch-size 32]
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
    import timm  # noqa: F401 - imported before timing: (c) excludes imports, and resolve() imports timm lazily
    import torch

    from probebench.data.base import image_folder
    from probebench.encoders.load import build, resolve
    from probebench.extract import Options, Request, extract
    from probebench.registry import parse_registry

    entry = parse_registry(ENTRY)["bench_vits16"]
    if name == "raw":
        ds = image_folder(folder)
        enc = build(resolve(entry))
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
        enc = build(resolve(entry)) if name == "cold" else None  # building a model is not extraction
        if enc is not None:
            with torch.inference_mode():
                enc.model.forward_features(torch.randn(2, 3, 224, 224))  # same warm-up as raw
        # Timed like a re-run: resolving the weights and fingerprinting the dataset are part of it.
        t = time.perf_counter()
        ds = image_folder(folder)
        res = extract(resolve(entry), ds, Request(), Options(batch_size=batch, progress=False), encoder=enc)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--phase", choices=["raw", "cold", "warm"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
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
