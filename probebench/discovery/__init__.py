"""Unsupervised object discovery on frozen features: one contract, many methods.

A method reads one image's cached features (`base.ImageFeatures`: the last block's keys, or patch tokens
standing in for them on encoders without attention; the class token's attention where there is one) and
returns a `base.Discovery`: an object mask on the patch grid, an optional soft foreground map, and one box in
grid cells. Untrained methods are functions (`baselines`: LOST, TokenCut, DINO-seg, the trivial boxes);
trained ones fit on a set of images first (`found`, `heap`). Metrics live in `probebench.probes.discovery`,
the task that runs them all in `probebench.tasks.discovery`.
"""
