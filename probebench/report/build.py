"""`probebench report`: the leaderboard and its figures as one self-contained HTML file and as Markdown.

The HTML embeds every figure (PNG, base64) and carries its own small script to sort tables by a column, so
it opens anywhere with nothing beside it. The Markdown links the same figures under results/plots/. Both
open with Findings (the papers' claims judged on these records, each task's ranks with ties, the
object-against-part figure with rank intervals), then one section per level (object, part, discovery), the
claims' tables, the papers' numbers beside ours, the per-family summary, and a provenance section: library
versions, commits, each encoder's weights checksum, and every deviation from the papers' protocols that a
record or a published number carries.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from probebench.errors import UserError
from probebench.paths import results_dir
from probebench.report import plots
from probebench.report.findings import findings
from probebench.results import tables
from probebench.results.papers import citations
from probebench.results.records import outputs_dir, record_path
from probebench.results.render import markdown_text, render_table
from probebench.results.schema import ResultRecord
from probebench.stats.claims import judge_claims, load_claims
from probebench.stats.ranks import rank_tasks
from probebench.tasks.contract import LEVELS
from probebench.tasks.deviations import deviation_text

GRID_RECORDS = 6  # discovery records drawn as image grids (each a few hundred kB in the HTML)
# Which discovery records get an image grid: photos drawn into a report are copies of the data, so a report
# meant to be shared (a committed reference) draws only the synthetic data, or none.
GRID_CHOICES = ("all", "synthetic", "none")


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs (plain text)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path)


@dataclass
class Report:
    html: Path
    markdown: Path
    plots: list[Path]


def _level_section(level: str, long: pd.DataFrame, plot_dir: Path, ranks: pd.DataFrame) -> Section | None:
    rows = long[long.level == level]
    if rows.empty:
        return None
    sec = Section(f"{level.capitalize()} level")
    sec.tables.append(
        (
            "Headline score of each task (its primary metric, the mean over training seeds); encoders by "
            "family; (#r) the rank with ties, = where it is shared (no significant difference)",
            _marked(tables.wide(rows), rows, ranks),
        )
    )
    mine = ranks[ranks.task.isin(set(rows.task))] if not ranks.empty else ranks
    if not mine.empty:
        sec.tables.append(("Ranks with ties per task, and each rank's 95 % bootstrap interval", mine))
    if not (seeds := tables.across_seeds(rows)).empty and (seeds.n_seeds > 1).any():
        sec.tables.append(("Over training seeds: mean, standard deviation and each seed's interval", seeds))
    if not (by_variant := tables.variants(rows)).empty:
        sec.tables.append(("The headline metric under every variant (each method, each k)", by_variant))
    fam = tables.families(rows)
    sec.tables.append(("Per family: mean, spread and count over encoders", fam))
    if (fig := plots.bars(rows)) is not None:
        sec.figures.append(
            (
                f"{level}-level scores, encoders grouped by family",
                plots.save(fig, plot_dir / f"bars_{level}")[0],
            )
        )
    if level in ("object", "part") and (fig := plots.layer_curves(rows)) is not None:
        sec.figures.append(
            ("Score against block index (layer sweeps)", plots.save(fig, plot_dir / f"layers_{level}")[0])
        )
    if level == "part" and (fig := plots.encoded_vs_projected(rows)) is not None:
        sec.figures.append(
            (
                "Part retrieval: encoded against projected features",
                plots.save(fig, plot_dir / "projection")[0],
            )
        )
    return sec


def _marked(wide: pd.DataFrame, rows: pd.DataFrame, ranks: pd.DataFrame) -> pd.DataFrame:
    """The wide table with each ranked score as `71.20 (#1=)`: its rank with ties, `=` where shared."""
    if ranks.empty or wide.empty:
        return wide
    h = tables.headline(rows)
    out = wide.copy()
    for r in ranks[ranks["rank"].notna()].itertuples():
        match = h[(h.task == r.task) & (h.dataset == r.dataset)]  # its primary metric, as the ranks
        if match.empty:
            continue
        column = tables.column_name(match.iloc[0])
        shared = ((ranks.task == r.task) & (ranks.dataset == r.dataset) & (ranks["rank"] == r.rank)).sum() > 1
        at = out.index[out.encoder == r.encoder]
        if column in out.columns and len(at) and pd.notna(out.loc[at[0], column]):
            out[column] = out[column].astype(object)
            out.loc[at[0], column] = f"{out.loc[at[0], column]:.2f} (#{r.rank}{'=' if shared else ''})"
    return out


def _discovery_grids(
    long: pd.DataFrame, root: Path, plot_dir: Path, records: dict, grids: str
) -> list[tuple[str, Path]]:
    out = []
    seen = long[(long.level == "discovery") & long.primary & ~long.layer_sweep]
    if grids == "synthetic":
        seen = seen[seen.synthetic.astype(bool)]
    elif grids == "none":
        return out
    for row in seen.drop_duplicates(["encoder", "task", "dataset"]).head(GRID_RECORDS).itertuples():
        folder = outputs_dir(record_path(row.encoder, row.dataset, row.task, root))
        rec = records.get((row.encoder, row.task, row.dataset))
        image_root = Path(rec.roles["test"].dataset.root) if rec is not None else None
        synthetic = " (synthetic)" if row.synthetic else ""
        title = f"{row.encoder} on {row.dataset}{synthetic}, task {row.task}"
        fig = plots.discovery_grid(folder, image_root, title)
        if fig is not None:
            stem = plot_dir / f"discovery_{row.encoder}_{row.dataset}_{row.task}"
            out.append((title, plots.save(fig, stem)[0]))
    return out


def _provenance(records: list, board: tables.Leaderboard) -> Section:
    sec = Section("Provenance")
    commits = sorted({f"{r.git.commit}" + (" (with local changes)" if r.git.dirty else "") for r in records})
    sec.text.append(f"Records: {len(records)}, from commit(s) {', '.join(commits) or '-'}.")
    sec.text += [f"Left out: {note}" for note in board.notes]
    weights = pd.DataFrame(
        sorted({(r.encoder.name, r.encoder.family, str(r.encoder.weights_id)) for r in records}),
        columns=["encoder", "family", "weights (sha256, or the random-init seed)"],
    )
    sec.tables.append(("Each encoder's weights", weights))
    sec.tables.append(
        ("What each encoder's records read (its protocol card: `probebench show NAME`)", _reading(records))
    )
    versions = pd.DataFrame(
        sorted({(lib, str(v)) for r in records for lib, v in r.versions.items()}),
        columns=["library", "version"],
    )
    sec.tables.append(("Library versions the records were made with", versions))
    deviations = sorted(
        {(r.task.name, text) for r in records for text in _deviations(r)}, key=lambda x: (x[0], x[1])
    )
    sec.tables.append(
        (
            "Deviations from the papers' protocols and warnings, as the records state them",
            pd.DataFrame(deviations, columns=["task", "deviation or warning"]),
        )
    )
    return sec


def _sizes_note(records: list) -> str | None:
    """One sentence where the encoders of a level's tables read images at different sizes."""
    sizes: dict[int, set[str]] = {}
    for r in records:
        if (size := r.knobs.resolution.input_size) is not None:
            sizes.setdefault(size, set()).add(r.encoder.name)
    if len(sizes) < 2:
        return None
    parts = [f"{size} px ({', '.join(sorted(names))})" for size, names in sorted(sizes.items())]
    return (
        "The encoders in these tables read images at different sizes: "
        + "; ".join(parts)
        + ". Each record's knobs.resolution says why (the default suite keeps each encoder's own evaluation "
        "size; the papers' suite reads every encoder at 224 px)."
    )


def _reading(records: list) -> pd.DataFrame:
    """What each encoder's records read: prefix tokens, keys, positions, pooling, sizes and precision."""
    rows = {}
    for r in records:
        facts = r.encoder.facts
        row = rows.setdefault(
            r.encoder.name,
            {
                "encoder": r.encoder.name,
                "library": facts.library,
                "prefix tokens": ", ".join(facts.prefix_tokens) or "none",
                "keys": facts.keys_kind,
                "positions": facts.positions,
                "pooling head": facts.pooling,
                "sizes read": set(),
                "precision": set(),
            },
        )
        row["sizes read"].add(str(r.knobs.resolution.input_size or "native"))
        row["precision"].add(r.knobs.precision)
    out = pd.DataFrame(list(rows.values()))
    if not out.empty:
        for col in ("sizes read", "precision"):
            out[col] = out[col].map(lambda v: ", ".join(sorted(v)))
    return out


def _deviations(record: ResultRecord) -> list[str]:
    """Every deviation a record lists (each id's sentence), and its warnings."""
    return [*(deviation_text(d) for d in record.deviations), *record.warnings]


def build_report(root: Path | None = None, grids: str = "all") -> Report:
    """Write results/report.html, results/report.md and results/plots/*; return their paths.

    grids: which discovery records get an image grid (`GRID_CHOICES`): all, only those on synthetic data,
    or none."""
    if grids not in GRID_CHOICES:
        raise UserError(f"--grids {grids!r}: use {', '.join(GRID_CHOICES)}")
    root = root or results_dir()
    plot_dir = root / "plots"
    tables.writable(plot_dir)
    board, _ = tables.refresh(root)
    long = board.long
    records = board.records  # the ones the tables hold: no older protocol, no duplicate
    by_key = {(r.encoder.name, r.task.name, r.dataset.filed_under): r for r in records}
    ranks = rank_tasks(records)
    per_task, summary = judge_claims(records, load_claims())
    found = Section("Findings", text=findings(records, summary, per_task, ranks))
    if (fig := plots.object_vs_part(long, ranks)) is not None:
        found.figures.append(
            (
                "Objects against parts, one point per encoder, with its 95 % rank interval on each axis",
                plots.save(fig, plot_dir / "object_vs_part")[0],
            )
        )
    sections = [found, _summary(long, board)]
    for level in LEVELS:
        sec = _level_section(level, long, plot_dir, ranks)
        if sec is not None and (note := _sizes_note([r for r in records if r.task.level == level])):
            sec.text.append(note)
        if sec is not None and level == "discovery":
            sec.figures += _discovery_grids(long, root, plot_dir, by_key, grids)
        if sec is not None:
            sections.append(sec)
    cmp = tables.papers(long)
    papers = Section("The papers' numbers beside ours")
    papers.text.append(
        f"Differences beyond {tables.FLAG_POINTS:g} point are flagged. "
        + " ".join(f"{k}: {v}." for k, v in citations().items())
    )
    papers.tables.append(("Published against measured (same encoder, task, dataset and metric)", cmp))
    if cmp.empty:
        papers.text.append(
            "No record here matches a published number: they need the papers' weights and data."
        )
    claims = Section("The papers' claims, tested on these records")
    claims.text.append(
        "Each claim of claims.yaml, judged task by task from a hierarchical bootstrap (test items, training "
        "seeds and the encoders within each family resampled): supported where the 95 % interval of the "
        "family difference lies above zero, contradicted where below, inconclusive otherwise."
    )
    claims.tables += [("Per claim and level", summary), ("Per task", per_task)]
    sections += [claims, papers, _provenance(records, board)]
    html_path, md_path = root / "report.html", root / "report.md"
    html_path.write_text(_html(sections, long))
    md_path.write_text(_markdown(sections, root))
    return Report(html_path, md_path, sorted(plot_dir.glob("*.png")) + sorted(plot_dir.glob("*.svg")))


def _summary(long: pd.DataFrame, board: tables.Leaderboard) -> Section:
    sec = Section("What ran")
    if long.empty:
        sec.text.append("No results yet: run `probebench run` first.")
        return sec
    data = long.drop_duplicates("dataset")
    sec.text.append(
        f"{long.encoder.nunique()} encoder(s), {long.task.nunique()} task(s), {len(long)} numbers. Data: "
        + ", ".join(
            d + (" (synthetic: procedurally generated, not photos)" if s else "")
            for d, s in zip(data.dataset, data.synthetic, strict=True)
        )
        + "."
    )
    sec.text += [f"Left out: {note}" for note in board.notes]
    return sec


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}
td.num{text-align:right}
th{background:#f0f0f0;cursor:pointer;user-select:none}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:13px;color:#555}
.scroll{overflow-x:auto}
"""
_SCRIPT = """
document.querySelectorAll('table.sortable td').forEach(function (td) {
  if (td.textContent.trim() !== '' && !isNaN(Number(td.textContent.trim()))) { td.className = 'num'; }
});
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var down = th.dataset.order !== 'asc';
      th.dataset.order = down ? 'asc' : 'desc';
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent.trim(), y = b.cells[col].textContent.trim();
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return down ? cmp : -cmp;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _html(sections: list[Section], long: pd.DataFrame) -> str:
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>probebench report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>probebench report</h1>",
        f"<p>Written {made} from the records under results/runs/. Click a column heading to sort.</p>",
    ]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        parts += [f"<p>{html.escape(t)}</p>" for t in sec.text]
        for caption, png in sec.figures:
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(
                f"<figure><img alt='{html.escape(caption, quote=True)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        for caption, df in sec.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>")
            if df.empty:
                parts.append("<p>(none)</p>")
                continue
            table = df.to_html(
                index=False, na_rep="", float_format=lambda v: f"{v:.2f}", classes="sortable", border=0
            )
            parts.append(f"<div class='scroll'>{table}</div>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _markdown(sections: list[Section], root: Path) -> str:
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = ["# probebench report", "", f"Written {made} from the records under results/runs/.", ""]
    text = markdown_text  # names, warnings and captions may come from hand-edited records and data
    for sec in sections:
        out += [f"## {text(sec.title)}", ""]
        for t in sec.text:
            out += [text(t), ""]
        for caption, png in sec.figures:
            link = quote(png.relative_to(root).as_posix())
            out += [f"![{text(caption)}]({link})", "", f"*{text(caption)}*", ""]
        for caption, df in sec.tables:
            out += [f"### {text(caption)}", ""]
            out += [render_table(df, "markdown") if not df.empty else "(none)", ""]
    return "\n".join(out)
