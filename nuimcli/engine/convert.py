"""``nuim convert`` as a job: the converter (:func:`nuimcli.data.convert.convert`) with rich
progress bars on stderr; used by ``nuim convert`` and the demo's convert step."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from nuimcli.utils.progress import make_progress


class RichConvertProgress:
    """:class:`nuimcli.data.convert.ConvertProgress` on rich bars.

    Reading the tables shows a transient MB bar; converting shows an image bar (images/s, ETA)
    that stays on screen, one per version. On an error every bar is removed so that the error
    stays a single line.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar = None
        self.task = None
        self.scale = 1.0

    def stage(self, description: str, total: int, unit: str) -> None:
        self._stop()
        reading = unit == "B"
        self.scale = 1e-6 if reading else 1.0
        self.bar = make_progress("MB" if reading else unit, transient=reading or self.quiet)
        self.bar.start()
        self.task = self.bar.add_task(description + (" (MB)" if reading else ""), total=max(total, 0) * self.scale)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n * self.scale)

    def _stop(self, clear: bool = False) -> None:
        if self.bar is not None:
            if clear:
                for t in list(self.bar.task_ids):
                    self.bar.remove_task(t)
            self.bar.stop()
            self.bar = None

    def close(self, failed: bool = False) -> None:
        self._stop(clear=failed)


def run_convert(data_root: Path, versions: List[str], out_dir: Optional[Path], nproc: int, extra_tag: str,
                quiet: bool = False) -> list:
    """Run the converter with progress bars on stderr; returns the list of VersionSummary."""
    from nuimcli.data.convert import convert

    progress = RichConvertProgress(quiet=quiet)
    try:
        summaries = convert(data_root, versions, out_dir=out_dir, nproc=nproc, extra_tag=extra_tag, progress=progress)
    except BaseException:
        progress.close(failed=True)
        raise
    progress.close()
    return summaries
