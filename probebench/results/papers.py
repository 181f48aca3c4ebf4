"""The papers' published numbers (`papers.yaml`), one row per (encoder, task, dataset, metric, variant)."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import yaml

PAPERS_FILE = Path(__file__).with_name("papers.yaml")
KEY = ["encoder", "task", "dataset", "metric", "variant"]


@functools.cache
def published(path: Path = PAPERS_FILE) -> pd.DataFrame:
    """Columns: encoder, task, dataset, metric, variant, paper (its key), table, note, paper_value."""
    rows = []
    for paper, block in yaml.safe_load(path.read_text()).items():
        for col in block["columns"]:
            for encoder, value in col["values"].items():
                rows.append(
                    {
                        "encoder": encoder,
                        "task": col["task"],
                        "dataset": col["dataset"],
                        "metric": col["metric"],
                        "variant": col.get("variant", ""),
                        "paper": paper,
                        "table": col["table"],
                        "note": col.get("note", ""),
                        "paper_value": float(value),
                    }
                )
    return pd.DataFrame(rows)


def citations(path: Path = PAPERS_FILE) -> dict[str, str]:
    """{paper key: its citation line}."""
    return {k: v["cite"] for k, v in yaml.safe_load(path.read_text()).items()}
