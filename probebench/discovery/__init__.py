"""Unsupervised object discovery on frozen features: one contract, many methods.

A method reads one image's cached features (`base.ImageFeatures`: the last block's keys, or patch tokens
standing in for them on encoders without attention; the class token's attention where there is one) and
returns a `base.Discovery`: an object mask on the patch grid, an optional soft foreground map, and one box in
grid cells. `methods.METHODS` is the one table of them, each a `DiscoveryMethod` that fits (or not) and
predicts: the untrained baselines (`baselines`: LOST, TokenCut, DINO-seg, the trivial boxes) and the trained
ones (`found`, `heap`). Their settings and defaults are in `configs`, which imports no torch. Metrics live in
`probebench.metrics.discovery`, the probe that runs them all in `probebench.tasks.probes.discovery`.
"""
