"""``report.html`` of ``nuim eval --plots``: the AP tables and every figure in one self-contained
page (images embedded as base64 data URIs; no script, no stylesheet or font from the network),
so it opens from disk anywhere and can be mailed as one file."""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from nuimcli.utils.io import atomic_write_text

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1600px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
"""


def _pct(v: Optional[float]) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_tables(doc: dict[str, Any]) -> str:
    """The summary and per-class AP tables of an eval metrics document, as HTML (percent)."""
    from nuimcli.engine.coco_metrics import METRIC_NAMES

    types = [(k, "box" if k == "bbox" else "mask") for k in ("bbox", "segm") if k in doc]
    out = _table(["", *METRIC_NAMES], [[label, *(_pct(doc[k].get(m)) for m in METRIC_NAMES)] for k, label in types])
    if types:
        names = list(doc[types[0][0]]["per_class"])
        out += _table(["class", *(f"{label} AP" for _, label in types)],
                      [[n, *(_pct(doc[k]["per_class"].get(n)) for k, _ in types)] for n in names])
    return out


def data_uri(png: str | os.PathLike) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def write_report(path: str | os.PathLike, doc: dict[str, Any], sections: Sequence[tuple[str, str, Sequence[Path]]],
                 title: str = "nuim eval report") -> Path:
    """Write the page: ``doc`` (the eval metrics document) as tables, then each section
    ``(heading, explanation, PNG paths)`` with its figures embedded. Atomic."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    src = doc.get("checkpoint") or doc.get("results_file")
    facts = [f"{doc.get('num_images', '?')} images", f"{doc.get('num_detections', '?')} detections",
             f"annotation ids: {doc.get('mode', '?')}"]
    if src:
        facts.insert(0, str(src))
    parts.append(f"<p class='note'>{html.escape('; '.join(facts))}</p><h2>COCO metrics (%)</h2>")
    parts.append(metrics_tables(doc))
    for heading, text, pngs in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><p class='note'>{html.escape(text)}</p>")
        for p in pngs:
            parts.append(f"<div><img alt='{html.escape(Path(p).name)}' src='{data_uri(p)}'></div>")
    parts.append("</body></html>")
    atomic_write_text(path, "\n".join(parts))
    return Path(path)
