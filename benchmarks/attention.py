"""What reading keys and class attention costs, side by side in one run (issue 22).

probebench reads the last block's keys and the class token's attention by calling that block once more on
its captured input and stopping it at the attention kernel (`probebench.encoders.attention`). Per model and
input size, the same batch of random images, random weights, fp32 on the CPU:
  (a) forward      - timm's `forward_intermediates` to the last block, nothing else: the floor;
  (b) probebench   - `encoder(x, [-1], keys=True, attention=True)`: the forward, the re-run, keys and the
                     class token's attention;
  (c) careful user - the forward with the last block on its unfused path and its softmax hooked (DINO's
                     `get_last_selfattention`, what LOST and TokenCut's code read), class attention only.
Target: (b) at most 1.15x the time of (a); (b) no slower than (c) by more than 5 %.

    python benchmarks/attention.py [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from probebench.encoders.base import Preprocess
from probebench.encoders.sources import create_timm_model
from probebench.encoders.timm_models import wrap_timm

MODELS = ("vit_small_patch16_224", "vit_small_patch16_dinov3")
SIZES = ((224, 224), (352, 480))


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, thread pools
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(model: torch.nn.Module, enc, x: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """Best-of times of (a) the forward, (b) probebench's keys and attention, (c) the careful user's."""
    last = len(model.blocks) - 1
    attn = model.blocks[-1].attn

    def forward():
        with torch.inference_mode():
            model.forward_intermediates(x, indices=[last], intermediates_only=True)

    def ours():
        enc(x, [-1], keys=True, attention=True)

    def careful():
        got, fused = {}, attn.fused_attn
        attn.fused_attn = False
        handle = attn.attn_drop.register_forward_hook(lambda m, i, out: got.update(a=out[:, :, 0]))
        try:
            forward()
        finally:
            handle.remove()
            attn.fused_attn = fused
        return got["a"]

    return tuple(best_of(f, repeats) for f in (forward, ours, careful))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"batch {args.batch}, best of {args.repeats}"
    )
    pre = Preprocess(224, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)
    for name in MODELS:
        model = create_timm_model(name, seed=0, pretrained=False).eval()
        enc = wrap_timm(model, pre)
        for size in SIZES:
            a, b, c = measure(model, enc, torch.randn(args.batch, 3, *size), args.repeats)
            print(
                f"{name:28s} {size[0]}x{size[1]}: (a) {a:6.3f} s  (b) {b:6.3f} s  (c) {c:6.3f} s   "
                f"b/a {b / a:4.2f}x (target <= 1.15)   b/c {b / c:4.2f}x (target <= 1.05)"
            )


if __name__ == "__main__":
    main()
