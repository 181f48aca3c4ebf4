"""Encoders: the registry of entries (`registry`), the contract every adapter meets (`base`), the transformer
skeleton (`tokens`) and how it reads keys and attention (`attention`), one adapter per library
(`timm_models`, `hf_models`, `clip_models`), where weights come from (`sources`), loading from registry
entries or names (`load`, `by_name`), and the protocol card (`card`).

Nothing is imported here: reading the registry (the leaderboard, `probebench list`) must not import torch.
"""
