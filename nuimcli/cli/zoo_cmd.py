"""``nuim zoo``: list, download, check and locate the released nuImages checkpoints; extract a backbone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nuimcli import download, zoo
from nuimcli.cli import TRUST_HELP, app
from nuimcli.cli.interrupt import on_interrupt
from nuimcli.download import DownloadError
from nuimcli.errors import EXIT_PARTIAL, PartialFailure, UserError
from nuimcli.utils.progress import err_console, stdout_console

zoo_app = typer.Typer(
    help="The released checkpoints of the results table: list, download (resumable, verified), check, path.",
    no_args_is_help=True,
)
app.add_typer(zoo_app, name="zoo")

_BASE_URL_HELP = (
    "Mirror keeping the upstream layout: a file is fetched from <base>/<path of its URL after the host>. "
    "A server (http://…) or a folder (file:///… or a path). Default: $NUIM_ZOO_URL."
)


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.1f}"


@zoo_app.command("list")
def list_command(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    urls: bool = typer.Option(False, "--urls", help="Also print each row's checkpoint and log URLs."),
) -> None:
    """Every row of the results table with its numbers, file hash and whether its checkpoint is downloaded."""
    entries = zoo.registry()
    if json_out:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    table = Table(title=f"nuim zoo (cache: {zoo.checkpoints_dir()})")
    for col, right in (("#", True), ("name", False), ("architecture", False), ("pretrain", False),
                       ("schd", False), ("Mem (GB)", True), ("Box AP", True), ("Mask AP", True),
                       ("hash", False), ("downloaded", False)):
        table.add_column(col, justify="right" if right else "left", no_wrap=col == "name")
    for e in entries:
        if not e.released:
            status = "not released"
        elif e.downloaded:
            status = "[green]yes[/]"
        elif e.partial_bytes is not None:
            status = f"partial ({e.partial_bytes / 2**20:.1f} MiB)"
        else:
            status = "no"
        table.add_row(str(e.row), e.name, e.architecture, e.pretrain, e.schedule,
                      _fmt(e.mem_gb), _fmt(e.box_ap), _fmt(e.mask_ap), e.hash8 or "—", status)
    console = stdout_console()
    console.print(table)
    if urls:  # whole lines rather than columns: a URL cut by the table could not be copied
        for e in entries:
            if e.released:
                console.print(f"{e.name}\n  checkpoint {e.checkpoint_url}\n  log        {e.log_url or '—'}",
                              highlight=False, markup=False, soft_wrap=True)


@zoo_app.command("download")
def download_command(
    names: Optional[list[str]] = typer.Argument(None, metavar="NAME", help="Zoo names (preset names, e.g. mask-rcnn-r50-1x).", show_default=False),
    all_: bool = typer.Option(False, "--all", help="Every released checkpoint."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help=_BASE_URL_HELP),
    force: bool = typer.Option(False, "--force", help="Download again even if the file is cached."),
    json_out: bool = typer.Option(False, "--json", help="Print the per-file results as JSON."),
) -> None:
    """Download checkpoints into the cache: progress bar, resume after an interruption, hash verified."""
    names = names or []
    if all_ and names:
        raise UserError("give zoo names or --all, not both")
    if not all_ and not names:
        raise UserError("name the checkpoints to download (e.g. `nuim zoo download mask-rcnn-r50-1x`) or pass --all")
    entries = zoo.registry()
    if all_:
        chosen = [e for e in entries if e.released]
    else:
        chosen = [zoo.get_entry(n, entries) for n in dict.fromkeys(names)]  # unknown → exit 2 before any download
        for e in chosen:
            if not e.released:
                raise UserError(f"'{e.name}' (row {e.row}) has no released checkpoint; `nuim zoo list` shows which rows do")
    zoo.check_cache_dir()  # a bad $NUIM_HOME is bad input (exit 2), not one failed download per file
    results = []
    for i, e in enumerate(chosen, 1):
        was_there = e.downloaded and not force
        part, done = download.part_path(e.path), sum(r["ok"] for r in results)
        on_interrupt(lambda part=part, done=done: f"{done} finished file(s)" + (
            f" and the partial download {part}" if part.exists() else ""), note="each download resumes where it stopped")
        if not json_out:
            err_console.print(f"[{i}/{len(chosen)}] {e.name}", highlight=False)
        try:
            path = zoo.download_entry(e, base_url=base_url, force=force)
            results.append({"name": e.name, "ok": True, "status": "cached" if was_there else "downloaded",
                            "path": str(path), "error": None})
        except DownloadError as err:
            err_console.print(f"[bold red]failed:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            results.append({"name": e.name, "ok": False, "status": "failed", "path": None, "error": str(err)})
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        table = Table(title="nuim zoo download")
        for col in ("name", "status", "path"):
            table.add_column(col)
        for r in results:
            status = r["status"] if r["ok"] else "[red]failed[/]"
            table.add_row(r["name"], status, r["path"] or "")
        stdout_console().print(table)
    failed = [r["name"] for r in results if not r["ok"]]
    if failed:
        raise PartialFailure(f"{len(failed)} of {len(results)} downloads failed: {', '.join(failed)}")


@zoo_app.command("check")
def check_command(
    names: Optional[list[str]] = typer.Argument(None, metavar="NAME", help="Zoo names; default: every downloaded checkpoint.", show_default=False),
    hash_only: bool = typer.Option(False, "--hash-only", help="Only re-hash; do not build the models."),
    json_out: bool = typer.Option(False, "--json", help="Print the per-checkpoint results as JSON."),
) -> None:
    """Re-hash downloaded checkpoints and load each strictly into its preset's model."""
    entries = zoo.registry()
    if names:
        chosen = [zoo.get_entry(n, entries) for n in dict.fromkeys(names)]
    else:
        chosen = [e for e in entries if e.downloaded]
    if not chosen:
        if json_out:
            print("[]")
        else:
            err_console.print("nothing downloaded to check (`nuim zoo download NAME`)")
        return
    results = []
    for e in chosen:
        if not json_out:
            err_console.print(f"checking {e.name} …", highlight=False)
        results.append(zoo.check_entry(e, load=not hash_only))
    if json_out:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        table = Table(title="nuim zoo check")
        for col in ("name", "expected", "found", "hash", "strict load", "result", "detail"):
            table.add_column(col)
        yes_no = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: "—"}
        for r in results:
            table.add_row(r.name, r.expected_hash8 or "—", r.found_hash8 or "—", yes_no[r.hash_ok],
                          yes_no[r.load_ok], "[green]OK[/]" if r.ok else "[red]FAIL[/]", r.detail)
        stdout_console().print(table)
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise PartialFailure(f"{len(failed)} of {len(results)} checkpoints failed the check: {', '.join(failed)}")


@zoo_app.command("path")
def path_command(name: str = typer.Argument(..., metavar="NAME", help="Zoo name, e.g. mask-rcnn-r50-1x.")) -> None:
    """Print the local file of a downloaded checkpoint (exit 1 when it is not downloaded)."""
    entry = zoo.get_entry(name)
    if not entry.released:
        err_console.print(escape(f"'{name}' has no released checkpoint"), highlight=False)
        raise typer.Exit(EXIT_PARTIAL)
    if not entry.downloaded:
        err_console.print(escape(f"'{name}' is not downloaded (it would be {entry.path}); run `nuim zoo download {name}`"),
                          highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_PARTIAL)
    print(entry.path)


@zoo_app.command("extract")
def extract_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Checkpoint: zoo name, file or URL."),
    parts: str = typer.Option("backbone", "--parts", help="Comma-separated: backbone, neck. One part: its own "
                              "keys (conv1.weight, layer1.0.conv1.weight, ...). Several: each keeps its name "
                              "(backbone.conv1.weight, neck.lateral_convs.0.conv.weight, ...)."),
    prefix: str = typer.Option("", "--prefix", help="Put this before every key, e.g. img_backbone. for a model "
                               "that reads the whole file with load_from."),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write (.pth)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Preset of the checkpoint, when the file cannot "
                                         "tell (a foreign mmdet file)."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=TRUST_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a model's backbone (and neck) weights as {'meta', 'state_dict'}: the file a BEV model's
    init_cfg=dict(type='Pretrained', checkpoint=FILE) loads (or, with --prefix, its load_from)."""
    from nuimcli.engine.extract import extract_parts, parse_parts

    chosen = parse_parts(parts)
    result = extract_parts(model, chosen, out, prefix=prefix, preset=preset, trust=trust_checkpoint)
    if json_out:
        print(json.dumps(result.to_dict(), indent=2))
        return
    stdout_console().print(
        escape(f"wrote {result.out}: {' + '.join(result.parts)} of {result.preset} ({result.num_tensors} tensors, "
               f"{result.num_params / 1e6:.2f} M values); keys like {', '.join(result.first_keys)}"),
        highlight=False, soft_wrap=True)
