"""The report: every plot from a small set of hand-made records, the HTML and Markdown documents, and the
HTML in a real headless browser (Debian's chromium through selenium; skipped where either is missing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_discovery_record, make_record, save_record
from PIL import Image

from probebench.report import plots
from probebench.report.build import build_report
from probebench.results import tables

ENCODERS = {"sup_a": "supervised", "sup_b": "supervised", "mim_a": "mim", "ctl": "control"}


@pytest.fixture
def root(tmp_path) -> Path:
    """Object (linear), part (retrieval encoded and projected), a layer sweep and a discovery record with
    its per-image outputs, for four encoders of three families, on the synthetic embedded data."""
    r = tmp_path / "results"
    for i, (enc, fam) in enumerate(ENCODERS.items()):
        top1 = 90.0 - 10 * i
        save_record(
            r, make_record(enc, "linear", {"top1": top1, "top1_ci95": [top1 - 3, top1 + 3]}, family=fam)
        )
        save_record(r, make_record(enc, "attentive", {"top1": top1 + 1}, family=fam, probe="attentive"))
        ap = {"ap": 30.0 + 8 * i, "ap_ci95": [28.0 + 8 * i, 32.0 + 8 * i], "map": 25.0}
        part = dict(probe="part_retrieval", level="part", family=fam, primary="ap")
        save_record(r, make_record(enc, "part_retrieval", ap, knobs={"feature": "encoded"}, **part))
        if fam != "control":
            proj = {"ap": 20.0 + 5 * i}
            save_record(
                r, make_record(enc, "part_retrieval_projected", proj, knobs={"feature": "projected"}, **part)
            )
        for layer in (3, 7, 11):
            rec = make_record(
                enc,
                "linear",
                {"top1": top1 - (11 - layer)},
                family=fam,
                knobs={"layer": layer, "layer_sweep": True},
            )
            save_record(r, rec, name=f"{enc}__embedded__linear__layer{layer}.json")
    rec = make_discovery_record("sup_a", {"heap": 50.0, "lost": 40.0, "centre": 30.0})
    path = save_record(r, rec)
    out = path.with_suffix("")
    out.mkdir()
    lines = []
    for pos in range(3):
        line = {"image": f"images/{pos}.png", "size": [64, 48], "gt_boxes": [[10.0, 8.0, 40.0, 30.0]]}
        for method in ("heap", "lost", "centre"):
            mask = np.zeros((48, 64), dtype=np.uint8)
            mask[8:30, 10 + pos : 40] = 255
            Image.fromarray(mask).save(out / f"mask.{method}.{pos:06d}.png")
            box = [10.0 + pos, 8.0, 40.0, 30.0] if method != "centre" else [16.0, 12.0, 48.0, 36.0]
            box = None if (method, pos) == ("heap", 2) else box  # a method that found nothing has no box
            line[method] = {
                "box": box,
                "correct": method != "centre",
                "iou": 0.9,
                "mask": f"mask.{method}.{pos:06d}.png",
            }
        lines.append(json.dumps(line))
    (out / "boxes.jsonl").write_text("\n".join(lines) + "\n")
    images = Path(rec.roles["test"].dataset.root)
    assert not images.exists()  # the grid then draws on a grey canvas
    return r


def test_a_shared_report_draws_no_photos(root):
    """`--grids synthetic` draws the grids of synthetic data only (a photo drawn into a report is a copy of
    the data), `none` draws none, and anything else is one line."""
    from probebench.errors import UserError

    photos = make_discovery_record("sup_b", {"heap": 20.0}, dataset="fruit", synthetic=False)
    save_record(root, photos)
    shutil.copytree(root / "runs" / "sup_a__embedded__discovery", root / "runs" / "sup_b__fruit__discovery")

    def grids(choice: str) -> list[str]:
        md = build_report(root, grids=choice).markdown.read_text()
        return sorted(p.name for p in (root / "plots").glob("discovery_*.png") if p.name in md)

    assert grids("all") == ["discovery_sup_a_embedded_discovery.png", "discovery_sup_b_fruit_discovery.png"]
    assert grids("synthetic") == ["discovery_sup_a_embedded_discovery.png"]
    assert grids("none") == []
    with pytest.raises(UserError, match="--grids 'photos': use all, synthetic, none"):
        build_report(root, grids="photos")


def _png_decodes(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        return im.size


def test_each_plot_is_drawn_from_a_small_set_of_records_and_names_its_data(root, tmp_path):
    long = tables.build_leaderboard(root).long
    figures = {
        "object_vs_part": plots.object_vs_part(long),
        "bars": plots.bars(long),
        "layers": plots.layer_curves(long),
        "projection": plots.encoded_vs_projected(long),
        "grid": plots.discovery_grid(
            root / "runs" / "sup_a__embedded__discovery", None, "sup_a on embedded (synthetic)"
        ),
    }
    assert all(f is not None for f in figures.values()), [k for k, f in figures.items() if f is None]
    head = figures["object_vs_part"].axes[0]
    assert (
        "embedded (synthetic)" in head.get_title() and "object level: linear on" in head.get_xlabel()
    )  # not attentive
    assert "part_retrieval on embedded" in head.get_ylabel()
    assert len(head.lines) >= 4  # one marker per encoder (plus error-bar lines)
    assert {t.get_text() for t in head.texts} == set(ENCODERS)
    layer_axes = figures["layers"].axes
    assert len(layer_axes[0].lines) == 4 and list(layer_axes[0].lines[0].get_xdata()) == [3, 7, 11]
    assert "synthetic" in figures["projection"].axes[0].get_title()
    assert len(figures["grid"].axes) == 3 * 3  # three images x three methods
    for name, fig in figures.items():
        png, svg = plots.save(fig, tmp_path / "plots" / name)
        assert _png_decodes(png)[0] > 100 and svg.read_text().lstrip().startswith("<?xml")


def test_headline_labels_do_not_overlap_when_encoders_score_alike(tmp_path):
    from matplotlib.text import Text

    r = tmp_path / "results"
    names = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2", "random_vits16"]
    for i, enc in enumerate(names):  # four within half a point of each other on both axes
        value = 80.0 + 0.1 * i if i < 4 else 40.0
        save_record(r, make_record(enc, "linear", {"top1": value}))
        part = dict(probe="part_retrieval", level="part", primary="ap")
        save_record(r, make_record(enc, "part_retrieval", {"ap": value - 0.1 * i}, **part))
    fig = plots.object_vs_part(tables.build_leaderboard(r).long)
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text alone, after the draw
    assert sorted(t.get_text() for t in ax.texts) == names
    overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
    assert overlaps == []
    points = [ax.transData.transform(ln.get_xydata()[0]) for ln in ax.lines if len(ln.get_xydata()) == 1]
    assert len(points) == len(names)
    assert not [p for p in points for b in boxes if b.contains(*p)], "no label covers a point"
    frame = ax.get_window_extent(renderer)
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)


def test_plots_say_none_when_the_records_hold_nothing_to_draw(root):
    long = tables.build_leaderboard(root).long
    objects_only = long[long.level == "object"]
    assert plots.object_vs_part(objects_only) is None
    assert plots.encoded_vs_projected(objects_only) is None
    assert plots.layer_curves(long[~long.layer_sweep]) is None
    assert plots.bars(long.iloc[0:0]) is None
    assert plots.discovery_grid(root / "runs" / "missing", None, "x") is None


def test_the_report_has_a_section_per_level_papers_and_provenance(root):
    report = build_report(root)
    md = report.markdown.read_text()
    for heading in (
        "## Object level",
        "## Part level",
        "## Discovery level",
        "## The papers' numbers",
        "## Provenance",
    ):
        assert heading in md
    assert "(synthetic: procedurally generated, not photos)" in md
    assert "sha-sup_a" in md  # each encoder's weights identity
    assert "![Objects against parts" in md and (root / "plots" / "object_vs_part.png").is_file()
    html = report.html.read_text()
    assert html.count("data:image/png;base64,") == len([p for p in report.plots if p.suffix == ".png"]) >= 5
    assert "src='plots/" not in html  # self-contained: nothing read from beside it
    variants = md[md.index("## Discovery level") :]
    assert "every variant" in variants and "40.00" in variants  # LOST's CorLoc beside HEAP's (the primary)


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver to run this test")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_the_html_loads_in_a_real_browser_images_decode_and_tables_sort(root, tmp_path):
    from selenium.webdriver.common.by import By

    report = build_report(root)
    browser = _browser()
    try:
        browser.get(report.html.as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        images = browser.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 5
        assert all(
            browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im)
            for im in images
        )
        table = browser.find_elements(By.CSS_SELECTOR, "table.sortable")[0]  # object level: encoders x scores

        def column() -> list[str]:
            return [
                r.find_elements(By.TAG_NAME, "td")[0].text
                for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
            ]

        before = column()
        assert before == ["sup_a", "sup_b", "mim_a", "ctl"]  # families in the registry's order
        heading = table.find_elements(By.TAG_NAME, "th")[0]
        heading.click()
        assert column() == sorted(before)
        heading.click()
        assert column() == sorted(before, reverse=True)
        browser.save_screenshot(str(tmp_path / "report.png"))
        assert _png_decodes(tmp_path / "report.png")[0] > 0
    finally:
        browser.quit()


def test_no_records_and_an_unwritable_folder_are_one_line_each(tmp_path, monkeypatch, capsys):
    from conftest import call_cli

    monkeypatch.setenv("PROBEBENCH_RESULTS", str(tmp_path / "empty"))
    code, out, err = call_cli(monkeypatch, capsys, "report")
    assert code == 0 and "report:" in out and "Traceback" not in err
    assert "No results yet" in (tmp_path / "empty" / "report.md").read_text()
    code, out, _ = call_cli(monkeypatch, capsys, "leaderboard", "--view", "papers")
    assert code == 0 and "(no results)" in out
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("PROBEBENCH_RESULTS", str(tmp_path / "a_file"))
    for verb in ("report", "leaderboard"):
        code, _, err = call_cli(monkeypatch, capsys, verb)
        assert code == 2 and err.count("\n") == 1 and "set PROBEBENCH_RESULTS to a writable folder" in err, (
            err
        )


def test_the_committed_reference_report_stays_under_2_mb():
    """Data and weights stay out of the repository, and so does anything over 2 MB: the discovery grids
    draw each image's own pixels (no resampling blur), which keeps them compressible."""
    reference = Path(__file__).resolve().parents[1] / "results" / "reference"
    sizes = {p.name: p.stat().st_size for p in reference.rglob("*") if p.is_file()}
    assert "report.html" in sizes
    assert {name: size for name, size in sizes.items() if size > 2 * 2**20} == {}


def test_the_report_says_when_encoders_of_one_table_read_different_sizes(tmp_path):
    """Lite1 at its own 240 px beside a ViT at 224: the object section says so; the provenance names what
    each encoder's records read."""
    r = tmp_path / "results"
    for enc, size in (("lite1", 240), ("vit", 224)):
        knobs = {"resolution": {"input_size": size, "policy": "encoder", "source": "timm's config"}}
        save_record(r, make_record(enc, "linear", {"top1": 50.0}, knobs=knobs))
    md = build_report(r).markdown.read_text()
    obj = md[md.index("## Object level") : md.index("## Part level") if "## Part level" in md else None]
    assert "read images at different sizes: 224 px (vit); 240 px (lite1)" in obj
    assert "What each encoder's records read" in md
    same = tmp_path / "same"
    for enc in ("a", "b"):
        save_record(same, make_record(enc, "linear", {"top1": 50.0}))
    assert "different sizes" not in build_report(same).markdown.read_text()


def test_the_report_opens_with_findings_from_the_claims_and_the_ranks(tmp_path):
    from conftest import save_with_items

    from probebench.stats.items import ItemScores

    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    for name, family, accuracy in (
        ("sup_a", "supervised", 0.90), ("sup_b", "supervised", 0.91), ("sup_c", "supervised", 0.89),
        ("con_a", "contrastive", 0.60), ("con_b", "contrastive", 0.62), ("con_c", "contrastive", 0.61),
    ):  # fmt: skip
        hits = rng.random(300) < accuracy
        items = ItemScores()
        items.add("top1", "mean", "test", [f"img{i:03d}.jpg" for i in range(300)], hits)
        record = make_record(name, "linear", {"top1": 100.0 * float(hits.mean())}, family=family)
        save_with_items(root, record, items)
    md = build_report(root).markdown.read_text()
    assert md.index("## Findings") < md.index("## What ran") < md.index("## Object level")
    findings = md[md.index("## Findings") : md.index("## What ran")]
    assert "6 encoder(s) have results here, from 2 families" in findings
    assert "(object level, against contrastive, mim): supported, supported on 1 of 1 task(s)" in findings
    assert "Note: no mim encoder ran these tasks: judged without that family" in findings
    assert "linear (top1): family difference +" in findings and "95 % interval \\[+" in findings
    combination = "untested here, as no contrastive+mim or mim encoder has object-level results; no "
    assert (
        combination + "contrastive+mim, supervised, contrastive or mim encoder has part-level results"
        in findings
    )
    assert "On linear (embedded, top1), " in findings and "95 % rank intervals: " in findings
    assert "(#1=)" in md, "the headline table marks the rank each supervised encoder shares"
    assert "## The papers' claims, tested on these records" in md
