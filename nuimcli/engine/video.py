"""Prediction on frame streams — video files, image sequences, nuImages sweeps — written as one
annotated H.264 MP4 (optionally a GIF) plus a JSONL file with one line per frame.

The work runs as a pipeline in bounded memory: a decode thread fills a small queue, the calling
thread batches and predicts (torch releases the GIL), and a writer thread draws, encodes and
writes JSONL lines, so decoding and encoding overlap inference. JSONL lines::

    {"frame": i, "time": seconds, "source": ..., "detections": [... as in the per-image JSON]}

plus ``"cut": true`` on the first frame of every snippet after the first (``--log``), ``"token"``,
``"sample_token"`` and ``"timestamp_us"`` for nuImages frames, and ``"error"`` (no detections,
not in the video) for an image that could not be read. An unfinished run ends with one trailer
line, ``{"partial": true, ...}`` (Ctrl-C) or ``{"truncated": true, "broke_at_frame": k, ...}``.
Tracking identities across frames is not done.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import cv2
import numpy as np

from nuimcli import CLASSES
from nuimcli.engine.predict import detection_records
from nuimcli.engine.semantic import write_semantic_png
from nuimcli.errors import Interrupted, UserError
from nuimcli.media.video import VideoReader, VideoTruncated, VideoWriter
from nuimcli.visual.draw import draw_predictions

#: Seconds a worker waits on a queue before looking at the stop flag again.
_POLL = 0.1
#: Frames a snippet's first frames carry the "cut" banner in the video.
CUT_BANNER_FRAMES = 3
#: Folder of a stream's semantic PNGs: ``<stem>_semantic/``.
SEMANTIC_SUFFIX = "_semantic"


@dataclass
class Frame:
    """One frame to predict: running index, time in seconds, image (None: unreadable) and extras."""

    index: int
    time: float
    image: Optional[np.ndarray]
    source: str
    extra: dict = field(default_factory=dict)
    cut: bool = False
    error: Optional[str] = None


@dataclass
class StreamResult:
    """What one stream produced (the CLI's table and ``--json`` row)."""

    source: str
    video_out: str = ""
    jsonl_out: str = ""
    gif_out: Optional[str] = None
    frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    num_detections: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    failed_frames: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    truncated: Optional[str] = None
    semantic_dir: Optional[str] = None
    ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dict(self.__dict__)


# --------------------------------------------------------------------------- sources


def video_frames(reader: VideoReader) -> Iterator[Frame]:
    """Frames of an open video (``VideoTruncated`` passes through after the last good one)."""
    for i, t, img in reader:
        yield Frame(i, t, img, reader.path)


def image_frames(paths: Iterable[Path], fps: float, extras: Optional[list[dict]] = None,
                 times: Optional[list[float]] = None, cuts: Optional[list[bool]] = None,
                 indices: Optional[list[int]] = None) -> Iterator[Frame]:
    """Frames read from image files in the given order; an unreadable file becomes a Frame with
    ``error`` set (reported, not encoded). ``indices``: each file's frame index in the whole
    sequence (with ``--every N``: 0, N, 2N, … as for a video), default its position."""
    from nuimcli.engine.predict import _read_image

    for i, p in enumerate(paths):
        t = times[i] if times is not None else i / fps
        ex = extras[i] if extras is not None else {}
        cut = bool(cuts[i]) if cuts is not None else False
        index = indices[i] if indices is not None else i
        try:
            yield Frame(index, t, _read_image(p), str(p), ex, cut)
        except ValueError as e:
            yield Frame(index, t, None, str(p), ex, cut, error=str(e))


def thin(frames: Iterable[Frame], every: int = 1, max_frames: Optional[int] = None) -> Iterator[Frame]:
    """Every ``every``-th frame (indices 0, N, 2N, …), at most ``max_frames`` of them."""
    kept = 0
    for f in frames:
        if max_frames is not None and kept >= max_frames:
            return
        if f.index % every == 0:
            kept += 1
            yield f


# --------------------------------------------------------------------------- the pipeline


class _Outputs:
    """The MP4, GIF, JSONL (and semantic PNG folder) being written, under temporary names until
    :meth:`finish` renames them: nothing incomplete ever sits under a final name."""

    def __init__(self, video_path: Path, fps: float, gif: bool, semantic: bool = False) -> None:
        self.video_path = video_path
        self.dir = video_path.parent
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tmps: dict[str, Path] = {}
        self.writer = VideoWriter(self._tmp(".mp4"), fps)
        self.gif = VideoWriter(self._tmp(".gif"), fps) if gif else None
        self.jsonl = open(self._tmp(".jsonl"), "w", encoding="utf-8")
        self.semantic_dir: Optional[Path] = None
        if semantic:
            self.semantic_dir = Path(tempfile.mkdtemp(prefix=f".{video_path.stem}.", suffix=SEMANTIC_SUFFIX,
                                                      dir=self.dir))
            self._tmps[SEMANTIC_SUFFIX] = self.semantic_dir

    def _tmp(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{self.video_path.stem}.", suffix=suffix, dir=self.dir)
        os.close(fd)
        self._tmps[suffix] = Path(name)
        return Path(name)

    def final(self, suffix: str, partial: bool = False) -> Path:
        """The name a file gets: ``NAME<suffix>`` or ``NAME.partial<suffix>``."""
        return self.dir / f"{self.video_path.stem}{'.partial' if partial else ''}{suffix}"

    def finish(self, partial: bool = False, trailer: Optional[dict] = None) -> dict[str, Path]:
        """Close everything and rename the files onto their final (or ``.partial``) names."""
        if trailer is not None:
            self.jsonl.write(json.dumps(trailer) + "\n")
        self.jsonl.close()
        self.writer.close()
        if self.gif is not None:
            self.gif.close()
        done = {}
        for suffix, tmp in self._tmps.items():
            dst = self.final(suffix, partial)
            if dst.is_dir():  # a folder cannot be replaced by a rename: the old one goes first
                shutil.rmtree(dst)
            os.replace(tmp, dst)
            if suffix == SEMANTIC_SUFFIX:
                os.chmod(dst, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
            done[suffix] = dst
            if not partial:  # a finished run replaces what an interrupted one left
                old = self.final(suffix, True)
                if old.is_dir():
                    shutil.rmtree(old)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        old.unlink()
        return done

    def discard(self) -> None:
        """Remove the temporary files (an error before the run could finish)."""
        with contextlib.suppress(Exception):
            self.jsonl.close()
        for closer in (self.writer, self.gif):
            with contextlib.suppress(Exception):
                if closer is not None:
                    closer.close()
        for tmp in self._tmps.values():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _banner(image: np.ndarray, text: str) -> np.ndarray:
    """A white frame and a black strip with ``text``: marks the first frames of a new snippet."""
    out = image.copy()
    h, w = out.shape[:2]
    cv2.rectangle(out, (0, 0), (w - 1, h - 1), (255, 255, 255), max(2, (h + w) // 300))
    scale = max(0.4, (h + w) / 2500)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, h - th - base - 6), (min(w, tw + 8), h), (0, 0, 0), -1)
    cv2.putText(out, text, (4, h - base - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class _Stop(Exception):
    """Internal: a queue put gave up because the pipeline is being torn down."""


class _Pipe:
    """A bounded queue between two pipeline stages. ``put`` blocks while it is full but gives up
    (raises :class:`_Stop`) once ``abort`` is set, so no thread waits forever on a consumer that
    died; ``get`` likewise returns :data:`END` once ``abort`` is set."""

    def __init__(self, maxsize: int, abort: threading.Event) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.abort = abort

    def put(self, item: Any) -> None:
        while True:
            if self.abort.is_set():
                raise _Stop
            try:
                self.q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        while True:
            if self.abort.is_set():
                return END
            try:
                return self.q.get(timeout=_POLL)
            except queue.Empty:
                continue


#: The sentinel closing a pipe: no more items.
END = object()



def _next_batch(pipe: Any, batch_size: int) -> tuple[list[Frame], bool]:
    """Up to ``batch_size`` frames from ``pipe``; the flag is True once the end marker was read."""
    batch: list[Frame] = []
    while len(batch) < batch_size:
        f = pipe.get()
        if f is END:
            return batch, True
        batch.append(f)
    return batch, False

class _FrameWriter:
    """The encode stage: draws each predicted frame, encodes it (MP4, GIF), writes its JSONL line
    and semantic PNG, and counts what the :class:`StreamResult` reports."""

    def __init__(self, outputs: _Outputs, result: StreamResult, score_thr: float, show_semantic: bool,
                 on_frame: Optional[Callable[[Frame, Any], None]], names: Sequence[str]) -> None:
        self.outputs, self.result, self.names = outputs, result, tuple(names)
        self.score_thr, self.show_semantic, self.on_frame = score_thr, show_semantic, on_frame
        self.classes: Counter = Counter()

    def write(self, f: Frame, pred: Any) -> None:
        """One frame (``pred`` None for an unreadable one: a JSONL line with ``error``, no video frame)."""
        line: dict[str, Any] = {"frame": f.index, "time": round(float(f.time), 6), "source": f.source, **f.extra}
        if f.cut:
            line["cut"] = True
        if f.error is not None:
            line["error"] = f.error
            line["detections"] = []
            self.result.failed_frames.append(f"{f.source}: {f.error}")
        else:
            keep = np.asarray(pred.scores) >= self.score_thr
            dets = detection_records(pred, keep, self.names)
            line["detections"] = dets
            picture = draw_predictions(f.image, pred.boxes[keep], pred.scores[keep], pred.labels[keep],
                                       masks=None if pred.masks is None else pred.masks[keep],
                                       semantic=pred.semantic if self.show_semantic else None, classes=self.names)
            if f.extra.get("snippet_frame", CUT_BANNER_FRAMES) < CUT_BANNER_FRAMES:
                picture = _banner(picture, f"snippet {f.extra.get('snippet', 0) + 1}: "
                                           f"{f.extra.get('sample_token', '')[:12]}")
            self.outputs.writer.write(picture)
            if self.outputs.gif is not None:
                self.outputs.gif.write(picture)
            if self.outputs.semantic_dir is not None and pred.semantic is not None:
                name = f"{f.index:06d}.png"
                write_semantic_png(self.outputs.semantic_dir / name, pred.semantic)
                line["semantic"] = f"{self.outputs.video_path.stem}{SEMANTIC_SUFFIX}/{name}"
            r = self.result
            r.frames += 1
            r.height, r.width = f.image.shape[:2]
            r.num_detections += len(dets)
            self.classes.update(d["category"] for d in dets)
            if self.on_frame is not None:
                self.on_frame(f, pred)
        self.outputs.jsonl.write(json.dumps(line) + "\n")


def predict_stream(
    model: Any,
    frames: Iterable[Frame],
    video_out: str | os.PathLike,
    fps: float,
    source: str = "",
    score_thr: float = 0.3,
    batch_size: int = 2,
    gif: bool = False,
    total: Optional[int] = None,
    progress: bool = True,
    on_frame: Optional[Callable[[Frame, Any], None]] = None,
    show_semantic: bool = False,
    semantic: bool = False,
) -> StreamResult:
    """Predict ``frames`` and write ``video_out`` (H.264 MP4), ``<stem>.jsonl`` and, with ``gif``,
    ``<stem>.gif`` next to it; with ``semantic``, each frame's semantic map as
    ``<stem>_semantic/<frame:06d>.png`` (see :mod:`nuimcli.engine.semantic`). Returns a
    :class:`StreamResult`.

    Three threads: decode (fills a bounded queue), this one (batches and predicts; torch releases
    the GIL), encode (draws, encodes, writes). Every queue is bounded, so memory stays a few
    batches whatever the video's length; every wait polls an abort flag, so no stage can block
    forever on one that stopped; a worker's exception is re-raised here.

    Ctrl-C writes what is done as ``<stem>.partial.mp4`` / ``.partial.jsonl`` (playable; JSONL
    with a ``partial`` trailer) and raises :class:`Interrupted`. A video whose decoding breaks
    off keeps the frames before the break under the final names, with a ``truncated`` trailer,
    and sets ``result.truncated``. ``on_frame(frame, prediction)`` is called per written frame.
    """
    import torch

    from nuimcli.utils.progress import make_progress

    video_out = Path(video_out)
    result = StreamResult(source=source or str(video_out), fps=float(fps))
    outputs = _Outputs(video_out, fps, gif, semantic)
    # the checkpoint's class names (own data), nuImages' for models that carry none
    writer = _FrameWriter(outputs, result, score_thr, show_semantic, on_frame, getattr(model, "classes", CLASSES))
    abort = threading.Event()  # set: every stage stops at its next queue operation
    to_model = _Pipe(max(4, 2 * batch_size), abort)
    to_writer = _Pipe(3, abort)
    errors: dict[str, BaseException] = {}
    bar = make_progress("frame")
    task = bar.add_task(Path(result.source).name[:40] or "predict", total=total)

    def decode() -> None:
        try:
            for f in frames:
                to_model.put(f)
        except _Stop:
            return
        except BaseException as e:  # handed to the main thread, which decides what it means
            errors["decode"] = e
        with contextlib.suppress(_Stop):
            to_model.put(END)

    def encode() -> None:
        try:
            while (item := to_writer.get()) is not END:
                for f, pred in item:
                    writer.write(f, pred)
                bar.update(task, advance=len(item))
        except BaseException as e:
            errors["write"] = e
            abort.set()

    decoder = threading.Thread(target=decode, name="nuim-decode", daemon=True)
    encoder = threading.Thread(target=encode, name="nuim-encode", daemon=True)
    interrupted = False
    with (bar if progress else contextlib.nullcontext()):
        decoder.start()
        encoder.start()
        try:
            done = False
            while not done:
                batch, done = _next_batch(to_model, batch_size)
                if not batch:
                    break
                good = [f for f in batch if f.error is None]
                with torch.no_grad():
                    preds = iter(model.predict([f.image for f in good], batch_size=batch_size)) if good else iter(())
                to_writer.put([(f, None if f.error else next(preds)) for f in batch])
        except KeyboardInterrupt:
            interrupted = True
        except _Stop:
            pass  # the encoder failed: its error is raised below
        except BaseException as e:
            errors["predict"] = e
        finally:
            # The encoder drains what was predicted (also after Ctrl-C: those frames make the
            # partial video), then the decoder is told to stop.
            if "write" not in errors:
                with contextlib.suppress(_Stop):
                    to_writer.put(END)
            _join(encoder, abort)
            abort.set()
            _join(decoder, abort)
    for stage in ("write", "predict"):
        if stage in errors:
            outputs.discard()
            raise errors[stage]
    result.classes = dict(writer.classes.most_common())
    if interrupted:
        files = outputs.finish(partial=True, trailer={"partial": True, "frames_done": result.frames})
        raise Interrupted(f"{files['.mp4']} and {files['.jsonl']} ({result.frames} frame(s), playable)",
                          resumes=False, note="it predicts every frame again")
    err = errors.get("decode")
    trailer = None
    if isinstance(err, VideoTruncated):
        result.truncated, result.ok = str(err), False
        trailer = {"truncated": True, "broke_at_frame": err.at_frame, "frames_stated": err.expected}
    elif err is not None:
        outputs.discard()
        raise err
    if result.frames == 0 and trailer is None:
        outputs.discard()
        raise UserError(f"{result.source}: no frame could be read")
    if result.failed_frames:
        result.ok = False
    files = outputs.finish(trailer=trailer)
    result.video_out, result.jsonl_out = str(files[".mp4"]), str(files[".jsonl"])
    result.gif_out = str(files[".gif"]) if ".gif" in files else None
    result.semantic_dir = str(files[SEMANTIC_SUFFIX]) if SEMANTIC_SUFFIX in files else None
    return result


def _join(thread: threading.Thread, abort: threading.Event, patience: float = 60.0) -> None:
    """Join a pipeline thread; one that does not finish within ``patience`` seconds (a stuck
    decoder or encoder call) is abandoned (daemon) rather than hanging the command."""
    thread.join(timeout=patience)
    if thread.is_alive():
        abort.set()
        thread.join(timeout=5)


def predict_video(model: Any, path: str | os.PathLike, batch_size: int = 2, every: int = 1,
                  max_frames: Optional[int] = None) -> Iterator[tuple[int, float, Any]]:
    """Python API: yield ``(frame index, seconds, Prediction)`` for the frames of a video file
    (every ``every``-th, at most ``max_frames``), nothing written. A thread decodes into a
    bounded queue while the model runs; stopping early (``break``, ``close()``) stops and joins
    it. A file that cannot be opened raises :class:`UserError`; a truncated one raises
    :class:`~nuimcli.media.video.VideoTruncated` after its last good frame."""
    import torch

    reader = VideoReader(path)
    abort = threading.Event()
    pipe = _Pipe(max(4, 2 * batch_size), abort)
    failure: list[BaseException] = []

    def decode() -> None:
        try:
            for f in thin(video_frames(reader), every, max_frames):
                pipe.put(f)
        except _Stop:
            return
        except BaseException as e:  # re-raised in the consumer, after the frames before it
            failure.append(e)
        with contextlib.suppress(_Stop):
            pipe.put(END)

    thread = threading.Thread(target=decode, name="nuim-decode", daemon=True)
    thread.start()
    try:
        done = False
        while not done:
            batch, done = _next_batch(pipe, batch_size)
            if batch:
                with torch.no_grad():
                    preds = model.predict([f.image for f in batch], batch_size=batch_size)
                yield from ((f.index, f.time, p) for f, p in zip(batch, preds))
        if failure:
            raise failure[0]
    finally:
        abort.set()
        _join(thread, abort)
        reader.close()
