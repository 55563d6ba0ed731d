"""The ``--plots`` / ``--show-dir`` part of ``nuim eval``, kept out of ``eval_cmd.py`` so that
command stays a thin shell: load what is needed, call the diagnostics engine, say what was written."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.markup import escape

from nuimcli.utils.progress import err_console


def write_diagnostics(doc: dict[str, Any], results: list | Path, ann: Path, data_root: Path,
                      plots: Optional[Path], show_dir: Optional[Path], show_n: int, score_thr: float,
                      reference_compat: bool) -> None:
    """Write ``--plots`` and/or ``--show-dir`` for ``results`` (a list, or a results file) on
    ``ann``; report the folders on stderr (stdout stays the table or the JSON document)."""
    from nuimcli.engine.coco_metrics import check_results, load_ground_truth, load_json_file
    from nuimcli.engine.diagnostics import write_plots, write_show_dir

    gt = load_ground_truth(ann)
    if not isinstance(results, list):
        where = f"results file {results}"
        results = load_json_file(results, "results file")
        check_results(results, gt, where)
    if plots is not None:
        files = write_plots(results, gt, plots, doc, score_thr=score_thr, reference_compat=reference_compat)
        err_console.print(escape(f"wrote {len(files)} files into {plots} (open {plots / 'report.html'})"))
    if show_dir is not None:
        recs = write_show_dir(results, gt, data_root, show_dir, score_thr=score_thr, n=show_n)
        err_console.print(escape(f"wrote {len(recs)} pictures into {show_dir}, worst first"))
