"""The layout keeps its seams: what a cache entry is stays inside `probebench.cache`, and no two public
things share a name (a reader who greps a name finds one definition)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "probebench"


def _modules():
    return [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]


def test_only_the_cache_reads_an_entry_s_files_and_names_its_arrays():
    leaks = []
    for path in _modules():
        if path.parent.name == "cache":
            continue
        text = path.read_text()
        for pattern in (r"\.manifest\b", r"key\.json", r"\.L\{"):
            leaks += [f"{path.relative_to(PACKAGE)}: {pattern}" for _ in re.finditer(pattern, text)]
    assert not leaks, "use FeatureStore's accessors and cache.store.array_name: " + ", ".join(leaks)


def test_no_two_public_functions_or_classes_share_a_name():
    where = defaultdict(list)
    for path in _modules():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(PACKAGE)))
    shared = {name: places for name, places in where.items() if len(places) > 1}
    assert not shared, shared
