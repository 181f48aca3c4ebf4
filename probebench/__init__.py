"""probebench: what do frozen pretrained image encoders know about objects, and about their parts?

The notebook API (`probebench.api`) is re-exported lazily, so the CLI's light commands do not import torch.
"""

__version__ = "0.1.0"
__all__ = ["claims", "compare", "extract", "leaderboard", "load_encoder", "run", "__version__"]


def __getattr__(name: str):
    if name in {"claims", "compare", "extract", "leaderboard", "load_encoder", "run"}:
        from probebench import api

        return getattr(api, name)
    raise AttributeError(f"module 'probebench' has no attribute {name!r}")
