"""What two CPU changes buy on the default suite, each measured side by side in one run (issue 12's demo).

  (1) channels-last: the forward pass of EfficientNet-Lite0 and MobileNetV2 (their real weights) on the same
      64 images at 224 px, in PyTorch's default NCHW layout and in channels-last, as
      `probebench.extraction.extract`
      now runs it: images/s, the ratio, and the largest difference between the two outputs.
  (2) allocator: `attentive` and `part_attentive` for EfficientNet-Lite0 end to end (extraction into an empty
      cache, then both probes) in two fresh processes, one with glibc's default allocator settings and one
      after `probebench.allocator.keep_freed_memory()`, as the CLI now calls it: wall and system seconds.

A third change, holding a small token set in memory for the attentive probe instead of reading the memory
map on every batch, measured 0.94x (default allocator) and 0.99x (with the setting) here and was dropped.

The fair peer in each case is the same library as its docs use it by default: PyTorch's default memory
format, glibc's default malloc. Run on an otherwise idle machine:

    python benchmarks/cpu.py
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = ["attentive", "part_attentive"]


def layouts() -> None:
    import torch

    from probebench.api import load_encoder

    torch.manual_seed(0)
    x = torch.rand(64, 3, 224, 224)
    for name in ("efficientnet_lite0", "mobilenetv2"):
        model = load_encoder(name).model.eval()
        out, rates = {}, {}
        for layout in (torch.contiguous_format, torch.channels_last):
            model.to(memory_format=layout)
            inputs = x.contiguous(memory_format=layout)
            with torch.inference_mode():
                model.forward_features(inputs[:8])  # warm-up: oneDNN picks its kernels on the first call
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    out[layout] = model.forward_features(inputs)
                    times.append(time.perf_counter() - t0)
            rates[layout] = len(x) / sorted(times)[1]
        diff = (out[torch.channels_last] - out[torch.contiguous_format]).abs().max().item()
        nchw, last = rates[torch.contiguous_format], rates[torch.channels_last]
        print(
            f"  {name:20s} NCHW {nchw:6.1f} img/s   channels-last {last:6.1f} img/s   "
            f"ratio {last / nchw:4.2f}x   max |diff| {diff:.1e}"
        )


def _child(mode: str, home: str, results: str) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    os.environ["PROBEBENCH_HOME"], os.environ["PROBEBENCH_RESULTS"] = home, results
    if "kept" in mode:
        from probebench.allocator import keep_freed_memory

        assert keep_freed_memory()
    from probebench.api import run

    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    outcomes = run(["efficientnet_lite0"], TASKS)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    metrics = [json.loads(Path(o.path).read_text())["metrics"] for o in outcomes]
    print(json.dumps({"wall": wall, "sys": after.ru_stime - before.ru_stime, "metrics": metrics}))


def _spawn(mode: str, home: Path, results: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(home), str(results)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print("(1) forward pass, 64 images at 224 px, median of 3")
    layouts()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"(2) EfficientNet-Lite0, {' + '.join(TASKS)} from an empty cache (embedded data)")
        default = _spawn("default", tmp / "home-default", tmp / "results-default")
        kept = _spawn("kept", tmp / "home", tmp / "results")
        for name, r in (("glibc default", default), ("keep_freed_memory", kept)):
            print(f"  {name:18s} wall {r['wall']:6.1f} s   sys {r['sys']:5.1f} s")
        same = default["metrics"] == kept["metrics"]
        print(f"  speed-up {default['wall'] / kept['wall']:4.2f}x   numbers equal: {same}")


if __name__ == "__main__":
    main()
