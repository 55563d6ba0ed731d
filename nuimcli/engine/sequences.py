"""The library entry point of ``nuim predict`` on videos, image sequences and nuImages sweeps:
work out the frame sources and output names, load the model once, run
:func:`nuimcli.engine.video.predict_stream` on each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from nuimcli.engine.video import StreamResult, image_frames, predict_stream, thin, video_frames
from nuimcli.errors import UserError
from nuimcli.media.video import VideoReader, is_video_path

#: Frame rate of an image sequence when neither --fps nor timestamps say.
DEFAULT_IMAGE_FPS = 10.0


@dataclass
class StreamOptions:
    """What every stream of one run shares."""

    score_thr: float = 0.3
    batch_size: int = 2
    gif: bool = False
    every: int = 1
    max_frames: Optional[int] = None
    fps: Optional[float] = None
    progress: bool = True
    show_semantic: bool = False  # paint HTC's semantic map into the frames
    semantic: bool = False  # save it as <name>_semantic/<frame>.png (devkit index encoding)

    def stream_kwargs(self) -> dict:
        """The keyword arguments of :func:`predict_stream` these options set."""
        return dict(score_thr=self.score_thr, batch_size=self.batch_size, gif=self.gif, progress=self.progress,
                    show_semantic=self.show_semantic, semantic=self.semantic)


def wants_streams(inputs: Sequence[str], as_video: Optional[str], data_root_mode: bool) -> bool:
    """True when ``nuim predict`` should run on streams rather than still images."""
    return bool(as_video) or data_root_mode or any(is_video_path(a) for a in inputs)


def _check_name(name: str, what: str) -> str:
    if Path(name).name != name or not name.lower().endswith(".mp4"):
        raise UserError(f"{what} {name!r}: give a file name ending in .mp4 (it is written into --out)")
    return name


def _check_options(opts: StreamOptions) -> None:
    if not 0.0 <= opts.score_thr <= 1.0:
        raise UserError(f"--score-thr {opts.score_thr}: must be between 0 and 1")
    if opts.every < 1:
        raise UserError(f"--every {opts.every}: must be at least 1")
    if opts.max_frames is not None and opts.max_frames < 1:
        raise UserError(f"--max-frames {opts.max_frames}: must be at least 1")
    if opts.fps is not None and opts.fps <= 0:
        raise UserError(f"--fps {opts.fps}: must be positive")


def predict_video_file(model: Any, path: str, out_dir: Path, opts: StreamOptions) -> StreamResult:
    """One video file → ``out_dir/<name>.mp4`` + ``.jsonl`` (+ ``.gif``)."""
    src = Path(path)
    if not src.is_file():
        raise UserError(f"{path}: no such file")
    dst = out_dir / f"{src.stem}.mp4"
    if dst.resolve() == src.resolve():
        raise UserError(f"{path}: --out would overwrite the input video; choose another folder")
    reader = VideoReader(src)
    try:
        fps = opts.fps or reader.info.fps / opts.every
        total = reader.info.frames or None
        if total:
            total = -(-total // opts.every)
            if opts.max_frames:
                total = min(total, opts.max_frames)
        return predict_stream(model, thin(video_frames(reader), opts.every, opts.max_frames), dst, fps,
                              source=str(src), total=total, **opts.stream_kwargs())
    finally:
        reader.close()


def predict_image_sequence(model: Any, inputs: Sequence[str], name: str, out_dir: Path,
                           opts: StreamOptions) -> StreamResult:
    """Image files, folders or globs in sorted order → one video ``out_dir/<name>``."""
    from nuimcli.engine.predict import expand_inputs

    files, failed = expand_inputs(inputs)
    if failed:
        raise UserError(f"{failed[0].source}: {failed[0].error}")
    if not files:
        raise UserError("no input images given")
    files = sorted(files) if len(inputs) == 1 else files  # one folder/glob: sorted; listed files: as given
    indices = list(range(0, len(files), opts.every))[: opts.max_frames]
    files = [files[i] for i in indices]
    fps = opts.fps or DEFAULT_IMAGE_FPS / opts.every
    return predict_stream(model, image_frames(files, fps, indices=indices), out_dir / _check_name(name, "--as-video"),
                          fps, source=", ".join(inputs[:3]), total=len(files), **opts.stream_kwargs())


def predict_nuimages(model: Any, data_root: str, version: str, out_dir: Path, opts: StreamOptions,
                     sample: Optional[str] = None, log: Optional[str] = None, camera: Optional[str] = None,
                     name: Optional[str] = None) -> StreamResult:
    """A nuImages sample's 13 frames, or every sample of a log and camera, → one video."""
    from nuimcli.data.sweeps import nuimages_sequence
    from nuimcli.utils.progress import err_console

    seq = nuimages_sequence(data_root, version, sample=sample, log=log, camera=camera)
    for m in seq.missing:
        err_console.print(f"[yellow]missing frame file (skipped): {m}[/]")
    indices = list(range(0, len(seq.frames), opts.every))[: opts.max_frames]
    frames = [seq.frames[i] for i in indices]
    fps = opts.fps or seq.fps() / opts.every
    t0 = frames[0].timestamp_us
    first_of_snippet: dict[int, int] = {}
    extras, cuts = [], []
    for k, f in enumerate(frames):
        pos = k - first_of_snippet.setdefault(f.snippet, k)
        extras.append({"token": f.token, "sample_token": f.sample_token, "timestamp_us": f.timestamp_us,
                       "key_frame": f.is_key_frame, "snippet": f.snippet,
                       # Only later snippets carry the banner: the first needs no cut marker.
                       **({"snippet_frame": pos} if f.snippet > 0 else {})})
        cuts.append(f.snippet > 0 and pos == 0)
    default = f"{sample}.mp4" if sample else f"{log}__{camera}.mp4"
    result = predict_stream(
        model, image_frames([f.path for f in frames], fps, extras=extras,
                            times=[(f.timestamp_us - t0) / 1e6 for f in frames], cuts=cuts, indices=indices),
        out_dir / _check_name(name or default, "--as-video"), fps, source=f"{version}:{sample or f'{log}/{camera}'}",
        total=len(frames), **opts.stream_kwargs())
    result.missing = seq.missing
    return result


def load_model(checkpoint: Optional[str], preset: Optional[str], device: str, threads: Optional[int],
               seed: int, trust_checkpoint: bool, exact: bool = False, half: bool = False,
               semantic_flags: Sequence[str] = ()) -> Any:
    """The model ``nuim predict`` runs, loaded exactly as for still images (fast inference by
    default, ``exact`` / ``half`` as there); ``semantic_flags`` names the options given that need
    a semantic head (refused with a one-line error on a preset without one)."""
    from nuimcli.engine.predict import load_predict_model

    return load_predict_model(checkpoint, preset, device, threads, seed, trust_checkpoint, exact=exact, half=half,
                              semantic_flags=semantic_flags)


def predict_streams(
    inputs: Sequence[str],
    out_dir: str | os.PathLike,
    opts: StreamOptions,
    as_video: Optional[str] = None,
    data_root: Optional[str] = None,
    version: str = "v1.0-mini",
    sample: Optional[str] = None,
    log: Optional[str] = None,
    camera: Optional[str] = None,
    load: Any = None,
) -> tuple[Any, list[StreamResult]]:
    """Run every stream the arguments name; ``load()`` gives the model (called once, after the
    arguments are checked). Returns ``(model, results)``."""
    _check_options(opts)
    out = Path(out_dir)
    nuim_mode = sample is not None or log is not None
    if nuim_mode:
        if inputs:
            raise UserError(f"{inputs[0]}: give no input files with --sample/--log (frames come from --data-root)")
        if data_root is None:
            raise UserError("--sample/--log need --data-root (the folder holding the version folder and sweeps/)")
        if as_video:
            _check_name(as_video, "--as-video")
        model = load()
        return model, [predict_nuimages(model, data_root, version, out, opts, sample, log, camera, as_video)]
    if not inputs:
        raise UserError("give a video file, image files with --as-video NAME.mp4, or --data-root with --sample/--log")
    videos = [a for a in inputs if is_video_path(a)]
    if as_video:
        if videos:
            raise UserError(f"{videos[0]}: --as-video makes one video from images; give videos without it")
        _check_name(as_video, "--as-video")
        model = load()
        return model, [predict_image_sequence(model, inputs, as_video, out, opts)]
    if len(videos) != len(inputs):
        other = next(a for a in inputs if not is_video_path(a))
        raise UserError(f"{other}: not a video; predict images and videos in separate runs "
                        "(or join images into a video with --as-video NAME.mp4)")
    for v in videos:
        if not Path(v).is_file():
            raise UserError(f"{v}: no such file")
    model = load()
    return model, [predict_video_file(model, v, out, opts) for v in videos]
