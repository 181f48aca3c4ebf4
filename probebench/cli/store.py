"""What probebench keeps on disk besides results: the feature cache (`cache ls|du|rm`), the papers' datasets
(`data download`) and their check (`doctor`)."""

from __future__ import annotations

from typing import Annotated

import typer

from probebench.cli.app import app, cache_app, data_app
from probebench.cli.common import DataRoot, Datasets, table
from probebench.errors import DatasetMissing, UserError


@app.command("doctor")
def doctor_command(datasets: Datasets = None, data_root: DataRoot = None):
    """Check every named and user dataset: found, image counts against those expected, one image decoded,
    every annotation against its image and every label map's values against the class list."""
    from probebench.data.catalog import check_counts, named_root, read_named
    from probebench.data.checks import check_label_values
    from probebench.data.config import build_dataset, config_path, resolve_root
    from probebench.data.loader import read_rgb
    from probebench.data.lookup import all_datasets

    rows, failed = [], 0
    for name, source, entry in all_datasets(datasets, builtin=False):
        named = entry if source == "named" else None
        try:
            if named is None:
                ds = build_dataset(entry, resolve_root(entry, config_path(datasets).parent, data_root))
            else:
                ds = read_named(named, named_root(named, data_root))
            short = check_counts(named, ds) if named else []
            problems = [] if len(ds) else ["no images found"]
            if len(ds):
                read_rgb(str(ds.root / ds.samples[0].path))
            problems += check_label_values(ds)
            found = " ".join(f"{sp}={n}" for sp, n in ds.describe()["splits"].items())
        except (UserError, OSError, ValueError) as exc:
            missing = isinstance(exc, DatasetMissing)
            failed += not missing or source == "user"
            fix = str(exc).removeprefix(f"dataset {name!r}: ")  # the rest names the file and the fix
            rows.append(
                {"dataset": name, "source": source, "status": "missing" if missing else "error", "found": "-"}
                | {"fix": fix}
            )
            continue
        failed += bool(problems or short)
        # "partial": readable but fewer images than the named set has; "error": something in it is wrong.
        fix = "; ".join(problems + short) + (f"; {named.how}" if short else "")
        rows.append(
            {
                "dataset": name,
                "source": source,
                "status": "error" if problems else "partial" if short else "ok",
                "found": found,
                "fix": fix or "; ".join(f"note: {w}" for w in ds.warnings),
            }
        )
    typer.echo(table(rows))
    if failed:
        typer.echo(f"{failed} dataset(s) need attention (see fix)", err=True)
        raise typer.Exit(1)


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="A named dataset (see `probebench doctor`).")],
    data_root: DataRoot = None,
):
    """Download, verify and unpack a named dataset under the data root; or say exactly what to do by hand."""
    from probebench.data.catalog import CATALOG, load_named
    from probebench.data.download import fetch, unpack_archive
    from probebench.paths import data_root as find_data_root

    if name not in CATALOG:
        raise UserError(f"unknown dataset {name!r}; named datasets: {', '.join(CATALOG)}")
    named = CATALOG[name]
    base = find_data_root(data_root)
    if named.download is None:
        typer.echo(f"{name} needs a manual step: {named.how}")
        raise typer.Exit(1)
    if base is None:
        raise UserError("no data root: set PROBEBENCH_DATA or pass --data-root to the folder datasets go in")
    url, filename, spec = named.download
    archive = fetch(url, base / ".downloads" / filename, spec)
    unpack_archive(archive, base / named.path)
    ds = load_named(name, base)
    typer.echo(
        f"{name}: {len(ds)} images in {base / named.path} ({archive.name} verified, {spec.split(':')[0]})"
    )


@cache_app.command("ls")
def cache_ls():
    """One line per cache entry: encoder, dataset, key, shards done, size."""
    from probebench.cache.entries import list_stores

    stores = list_stores()
    rows = [
        {
            "encoder": s.root.parent.parent.name,
            "dataset": s.root.parent.name,
            "key": s.root.name,
            "images": "-" if s.damaged else s.n,
            "shards": "damaged" if s.damaged else f"{s.num_shards - len(s.missing_shards())}/{s.num_shards}",
            "arrays": s.damaged or ",".join(s.arrays()),
            "MB": f"{s.size_bytes() / 1e6:.1f}",
        }
        for s in stores
    ]
    typer.echo(table(rows))
    if damaged := sum(s.damaged is not None for s in stores):
        typer.echo(
            f"{damaged} damaged entr{'y' if damaged == 1 else 'ies'}: `probebench run` recomputes them, "
            "`probebench cache rm` removes them",
            err=True,
        )


@cache_app.command("du")
def cache_du():
    """Disk use of the feature cache, per encoder."""
    from probebench.cache.entries import list_stores
    from probebench.paths import features_dir

    per: dict[str, int] = {}
    for s in list_stores():
        per[s.root.parent.parent.name] = per.get(s.root.parent.parent.name, 0) + s.size_bytes()
    typer.echo(table([{"encoder": k, "MB": f"{v / 1e6:.1f}"} for k, v in sorted(per.items())]))
    typer.echo(f"total {sum(per.values()) / 1e6:.1f} MB in {features_dir()}")


@cache_app.command("rm")
def cache_rm(
    encoder: Annotated[str | None, typer.Option("--encoder", help="This encoder's entries.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="This dataset's entries.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
):
    """Remove cache entries of an encoder and/or dataset (or --all)."""
    from probebench.cache.entries import remove_stores

    if not (encoder or dataset or all_):
        raise UserError("say what to remove: --encoder NAME, --dataset NAME, or --all")
    removed = remove_stores(encoder, dataset)
    typer.echo(f"removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}")
