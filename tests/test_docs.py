"""The manual cannot drift from the code: every `console` block of the README and of docs/ runs again here
(its `$ probebench ...` commands, in one fresh workspace per page, in order) and must print what the block
shows; every `python` block of the contributor guide runs too. A line `...` in a block stands for any lines.

The pages' navigation and links are checked by `mkdocs build --strict` (`make docs`, part of `make test`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(console|python)\n(.*?)^```", re.M | re.S)


def blocks(page: Path, kind: str) -> list[str]:
    return [body for k, body in BLOCK.findall(page.read_text()) if k == kind]


def sessions(body: str) -> list[tuple[str, list[str]]]:
    """A console block as (command, expected output lines) pairs."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def matches(expected: list[str], actual: list[str]) -> str | None:
    """None when `actual` reads as `expected` (`...` for any lines), else what differs."""
    at, loose = 0, False
    for want in expected:
        if want == "...":
            loose = True
            continue
        if loose:
            while at < len(actual) and actual[at] != want:
                at += 1
        if at >= len(actual) or actual[at] != want:
            return f"expected {want!r}, got {actual[at] if at < len(actual) else '(end)'!r}"
        at, loose = at + 1, False
    if not loose and at < len(actual):
        return f"unexpected line {actual[at]!r}"
    return None


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROBEBENCH_RESULTS"}  # results/ in the workspace
    env["PROBEBENCH_HOME"] = str(home)
    env["COLUMNS"] = "200"
    return env


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "console")], ids=lambda p: p.name)
def test_console_examples_print_what_the_page_shows(page, tmp_path):
    env = _env(tmp_path / "home")
    for body in blocks(page, "console"):
        for command, expected in sessions(body):
            argv = shlex.split(command)
            assert argv[0] == "probebench", f"{page.name}: only probebench commands run here: {command}"
            done = subprocess.run(
                [sys.executable, "-m", "probebench", *argv[1:]],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            actual = (done.stdout + done.stderr).rstrip("\n").splitlines()
            problem = matches(expected, actual)
            assert problem is None, f"{page.name}: `{command}`: {problem}\n" + "\n".join(actual)
    if page.name == "README.md":  # its Python example reads the records the commands wrote
        for code in blocks(page, "python"):
            done = subprocess.run(
                [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            assert "skipped  efficientnet_lite0 x embedded x knn: top1_k20=93.00" in done.stdout


def test_the_contributor_guides_run(tmp_path):
    """Each worked example of docs/contributing.md (a source kind, a dataset format, a probe, a discovery
    method) runs as written, in a fresh process."""
    codes = blocks(ROOT / "docs" / "contributing.md", "python")
    assert len(codes) >= 4, "one worked example per extension point"
    for code in codes:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=_env(tmp_path / "home"),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"{code}\n{done.stderr}"


def test_the_matcher_reads_ellipses_and_refuses_other_lines():
    assert matches(["a", "...", "c"], ["a", "b", "b", "c"]) is None
    assert matches(["a", "..."], ["a", "x"]) is None
    assert matches(["a", "c"], ["a", "b", "c"]) is not None
    assert matches(["a"], ["a", "b"]) is not None


def test_each_deviation_id_has_its_sentence_in_the_protocols_page_and_every_emitted_id_is_known():
    """A record lists deviations by id; the report prints the catalogue's sentence and the protocols page
    repeats it. An id a shipped probe emits without a sentence would print as a bare id."""
    from probebench.tasks.deviations import DEVIATIONS

    page = (ROOT / "docs" / "protocols.md").read_text()
    for name, sentence in DEVIATIONS.items():
        assert f"| `{name}` | {sentence} |" in page, name
    listed = re.compile(r"(?:deviations\s*=|DEPARTURES\s*=|deviations\.append\()\s*(\[[^\]]*\]|\"[^\"]*\")")
    emitted = {
        quoted
        for path in (ROOT / "probebench" / "tasks" / "probes").glob("*.py")
        for group in listed.findall(path.read_text())
        for quoted in re.findall(r'"([^"]+)"', group)
    }
    assert emitted == set(DEVIATIONS), emitted ^ set(DEVIATIONS)  # none unknown, none unused
