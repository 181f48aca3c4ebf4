"""Tables as text: csv, markdown or json, each escaped for where it is read. Names, warnings and captions can
come from hand-edited records and data, so a csv cell never runs as a spreadsheet formula and a markdown cell
never becomes a tag, link or table break."""

from __future__ import annotations

import pandas as pd

TABLE_FORMATS = ("csv", "markdown", "json")


# A spreadsheet runs a text cell that starts with one of these as a formula (`=HYPERLINK(...)`).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _number_text(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def csv_cell(v):
    """A cell that a spreadsheet would run as a formula, prefixed with a quote (OWASP's advice); numbers,
    and text that reads as a number (-0.5), are left as they are."""
    if isinstance(v, str) and v.startswith(_FORMULA) and not _number_text(v):
        return "'" + v
    return v


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell and column name of a table through `csv_cell`."""
    out = df.map(csv_cell) if len(df) else df.copy()
    out.columns = [csv_cell(c) for c in out.columns]
    return out


# `_` is left alone: names are full of it, and inside a word it starts no emphasis (CommonMark).
_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*[]|"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"})


def markdown_text(text: str) -> str:
    """Text as Markdown shows it literally: no tag (raw HTML renders in most Markdown viewers), link, code
    span, emphasis by `*` or table cell break can come from a name or a warning. Line breaks become
    spaces."""
    return " ".join(str(text).split("\n")).translate(_MARKDOWN)


def markdown_safe(df: pd.DataFrame) -> pd.DataFrame:
    out = df.map(lambda v: markdown_text(v) if isinstance(v, str) else v) if len(df) else df.copy()
    out.columns = [markdown_text(c) for c in out.columns]
    return out


def render_table(df: pd.DataFrame, fmt: str) -> str:
    """A table as csv, markdown (a GitHub table) or json (a list of row objects)."""
    if fmt == "csv":
        return csv_safe(df).to_csv(index=False, float_format="%.2f")
    if fmt == "markdown":  # tabulate leaves NaN as "nan"; an empty cell reads better
        df = markdown_safe(df)
        return (
            df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=".2f", missingval="")
        )
    if fmt == "json":
        return df.to_json(orient="records", indent=1, double_precision=4)
    raise ValueError(f"format {fmt!r}: use one of {', '.join(TABLE_FORMATS)}")
