"""Shared fixtures: every test runs offline against its own probebench home, hub cache and torch cache."""

from __future__ import annotations

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
