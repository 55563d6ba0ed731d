"""The model zoo: the released nuImages checkpoints of the results table, cached and verified.

The registry is built from the presets (one source of truth): every preset with a ``release``
block is one row of the table, named by its preset name (``mask-rcnn-r50-1x``). Rows whose
release links no file are listed as not released.

Files are cached under :func:`cache_dir` (``$NUIM_HOME`` or ``~/.cache/nuimcli``) in
``checkpoints/``, keeping their upstream file names; a download in progress is ``<file>.part``.
Every file goes through :func:`nuimcli.download.fetch` (progress, resume, retries, hash check,
``NUIM_ZOO_URL`` mirrors) — released checkpoints as well as the ImageNet backbones and COCO
``load_from`` detectors that training starts from (:func:`fetch_to_cache`).
"""

from __future__ import annotations

import difflib
import functools
import os
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from nuimcli import download
from nuimcli import presets as _presets
from nuimcli.download import DownloadError, file_name_of
from nuimcli.errors import UserError
from nuimcli.presets import Preset, list_presets, load_preset
from nuimcli.utils.hashing import sha256_file

HOME_ENV = "NUIM_HOME"


def cache_dir() -> Path:
    """nuimcli's cache folder: ``$NUIM_HOME`` if set, else ``~/.cache/nuimcli`` (not created here)."""
    home = os.environ.get(HOME_ENV, "").strip()
    return Path(home).expanduser() if home else Path("~/.cache/nuimcli").expanduser()


def checkpoints_dir() -> Path:
    """Where downloaded files live: ``<cache_dir>/checkpoints``."""
    return cache_dir() / "checkpoints"


def check_cache_dir() -> Path:
    """:func:`checkpoints_dir`, after making sure it can be written (a :class:`UserError` naming
    ``$NUIM_HOME`` when that is a file or read-only); called before any download."""
    from nuimcli.utils.paths import check_out_dir

    home = os.environ.get(HOME_ENV, "").strip()
    check_out_dir(cache_dir(), f"${HOME_ENV}" if home else "cache folder")
    return check_out_dir(checkpoints_dir(), f"${HOME_ENV}" if home else "cache folder")


def architecture(preset: Preset) -> str:
    """A short human name of the preset's model, e.g. ``Mask R-CNN R-50-FPN`` or ``HTC X-101-64x4d-FPN DCN``
    (:attr:`nuimcli.presets.ModelConfig.display_name`: detector and backbone names from the presets)."""
    return preset.model.display_name


@dataclass(frozen=True)
class ZooEntry:
    """One row of the results table and its released file (if any)."""

    name: str  #: the preset name, used everywhere as the zoo name
    row: int
    architecture: str
    detector: str
    pretrain: str
    schedule: str
    mem_gb: Optional[float]
    box_ap: Optional[float]
    mask_ap: Optional[float]
    checkpoint_url: Optional[str]
    hash8: Optional[str]  #: first 8 hex digits of the file's SHA-256 (mmdet's file-name suffix)
    log_url: Optional[str]
    config: str = ""  #: the mmdet3d v0.x config name

    @property
    def released(self) -> bool:
        """True when the row links a released checkpoint file."""
        return bool(self.checkpoint_url)

    @property
    def filename(self) -> Optional[str]:
        """The upstream file name, kept by the cached copy (None when not released)."""
        return download.file_name_of(self.checkpoint_url) if self.checkpoint_url else None

    @property
    def path(self) -> Optional[Path]:
        """Where the checkpoint is (or would be) cached; None when not released."""
        return checkpoints_dir() / self.filename if self.filename else None

    @property
    def downloaded(self) -> bool:
        """True when the verified file is in the cache."""
        p = self.path
        return p is not None and p.is_file()

    @property
    def partial_bytes(self) -> Optional[int]:
        """Size of an interrupted download (``<file>.part``) waiting to be resumed, else None."""
        p = self.path
        if p is None:
            return None
        part = download.part_path(p)
        return part.stat().st_size if part.is_file() else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``nuim zoo list --json`` prints per row)."""
        d = asdict(self)
        d["released"] = self.released
        d["filename"] = self.filename
        d["downloaded"] = self.downloaded
        d["partial_bytes"] = self.partial_bytes
        d["path"] = str(self.path) if self.path else None
        return d


def entry_from_preset(preset: Preset) -> ZooEntry:
    """The zoo entry of a preset that carries a ``release`` block."""
    r = preset.release
    if r is None:
        raise UserError(f"preset '{preset.name}' is not a row of the results table (no release block)")
    return ZooEntry(
        name=preset.name,
        row=r.row,
        architecture=architecture(preset),
        detector=preset.model.detector,
        pretrain=r.pretrain,
        schedule=r.schedule,
        mem_gb=r.mem_gb,
        box_ap=r.box_ap,
        mask_ap=r.mask_ap,
        checkpoint_url=r.checkpoint_url or None,
        hash8=r.hash8 or None,
        log_url=r.log_url or None,
        config=r.config,
    )


def registry() -> list[ZooEntry]:
    """Every row of the results table (presets with a ``release`` block), in table order."""
    folder = _presets.presets_dir()
    # Reading every preset costs ~0.5 s; a process asks often (resolve, check, list), and
    # the key changes whenever a preset file does.
    key = (str(folder),) + tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.glob("*.yaml")))
    return list(_registry_for(key))


@functools.lru_cache(maxsize=4)
def _registry_for(key: tuple) -> tuple[ZooEntry, ...]:
    out = []
    for name in list_presets():
        preset = load_preset(name)
        if preset.release is not None:
            out.append(entry_from_preset(preset))
    return tuple(out)


def _suggestion(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.4)
    return f" (did you mean '{close[0]}'?)" if close else ""


def get_entry(name: str, entries: Optional[list[ZooEntry]] = None) -> ZooEntry:
    """The entry named ``name``; an unknown name is a :class:`UserError` suggesting the closest."""
    entries = registry() if entries is None else entries
    for e in entries:
        if e.name == name:
            return e
    raise UserError(f"unknown zoo name '{name}'{_suggestion(name, [e.name for e in entries])}; `nuim zoo list` shows them")


def entry_for_path(path: str | os.PathLike) -> Optional[ZooEntry]:
    """The entry whose released file has ``path``'s file name (upstream names are unique), or None."""
    name = Path(path).name
    for e in registry():
        if e.filename == name:
            return e
    return None


def _not_released(entry: ZooEntry) -> UserError:
    return UserError(
        f"'{entry.name}' (row {entry.row}) has no released checkpoint (the results table links no file); "
        f"train it with `nuim train {entry.name}`"
    )


def download_entry(
    entry: ZooEntry, base_url: Optional[str] = None, progress: bool = True, force: bool = False, **fetch_kwargs: Any
) -> Path:
    """Download (or find in the cache) the released checkpoint of ``entry``, verified by its hash.

    ``base_url`` None uses ``NUIM_ZOO_URL``. Raises :class:`UserError` for a row without a file,
    :class:`~nuimcli.download.DownloadError` when the file cannot be fetched or does not verify.
    """
    if not entry.released:
        raise _not_released(entry)
    assert entry.path is not None and entry.checkpoint_url is not None
    check_cache_dir()
    expected = entry.hash8 or download.hash_prefix_from_name(entry.checkpoint_url)
    return download.fetch(
        entry.checkpoint_url, entry.path, expected_hash8=expected, base_url=base_url,
        progress=progress, force=force, label=entry.name, **fetch_kwargs,
    )


def fetch_to_cache(url: str, base_url: Optional[str] = None, progress: bool = True, **fetch_kwargs: Any) -> Path:
    """Any published http(s) file (ImageNet backbone, COCO ``load_from`` checkpoint…) into the cache.

    The file keeps its upstream name under :func:`checkpoints_dir`; when that name carries a
    hash suffix (``resnet50-19c8e357.pth``) the download is verified against it.
    """
    dest = check_cache_dir() / download.file_name_of(url)
    return download.fetch(
        url, dest, expected_hash8=download.hash_prefix_from_name(url), base_url=base_url,
        progress=progress, **fetch_kwargs,
    )


def best_released(preset: Optional[str] = None) -> ZooEntry:
    """The entry to use when no checkpoint is named: ``preset``'s own released file, or (no
    preset) the released row with the highest mask AP."""
    if preset is not None:
        load_preset(preset)  # an unknown name: the error suggests the closest preset
        entry = next((e for e in registry() if e.name == preset), None)
        if entry is None or not entry.released:  # a table row without a file, or the tiny preset
            raise UserError(f"preset '{preset}' has no released checkpoint; pass --checkpoint PATH "
                            f"(e.g. work_dirs/{preset}/latest.pth from `nuim train {preset}`)")
        return entry
    released = [e for e in registry() if e.released]
    if not released:
        raise UserError("no released checkpoint in the zoo; pass --checkpoint PATH")
    return max(released, key=lambda e: (e.mask_ap or 0.0, e.box_ap or 0.0))


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Resolved:
    """A checkpoint argument made local: the file, and its preset when the name alone tells."""

    path: Path
    preset: Optional[str] = None  #: the zoo name for a zoo entry or a released file's URL, else None (the file decides)


def looks_like_path(text: str) -> bool:
    """True when ``text`` is meant as a file path (a separator or a checkpoint suffix), so that a
    missing file is reported as such rather than as an unknown zoo name."""
    return os.sep in text or "/" in text or Path(text).suffix in (".pth", ".pt", ".ckpt")


def locate(
    spec: str | os.PathLike, download: bool = True, progress: bool = True, base_url: Optional[str] = None,
    what: str = "checkpoint",
) -> Resolved:
    """A checkpoint argument → :class:`Resolved` (a local file), in this process.

    An existing path is returned as is; a ``file://`` URL names a local file. A zoo name
    (``mask-rcnn-r50-1x``) gives its cached file, downloaded and verified first when
    ``download`` (else a :class:`UserError` saying how to get it). An http(s) URL is fetched
    into the cache under its own name (``download`` False: only found there). Anything else is
    a :class:`UserError` naming the closest zoo name; ``what`` names the file in the messages.
    Multi-process jobs call :func:`nuimcli.engine.resolve.resolve`, which runs this once per node.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return Resolved(path)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme == "file":
        local = Path(urllib.request.url2pathname(parts.path))
        if not local.exists():
            raise UserError(f"{text}: no such {what} file")
        return Resolved(local)
    if parts.scheme in ("http", "https"):
        entry = next((e for e in registry() if e.checkpoint_url == text), None)
        if download:
            return Resolved(fetch_to_cache(text, base_url=base_url, progress=progress), entry.name if entry else None)
        cached = checkpoints_dir() / file_name_of(text)
        if not cached.is_file():
            raise UserError(f"{text}: not downloaded into {checkpoints_dir()}")
        return Resolved(cached, entry.name if entry else None)
    entries = registry()
    by_name = {e.name: e for e in entries}
    if text in by_name:
        return Resolved(_cached_entry_file(by_name[text], download, base_url, progress), text)
    if looks_like_path(text):
        raise UserError(f"{text}: no such {what} file")
    raise UserError(
        f"'{text}' is neither a {what} file nor a zoo name{_suggestion(text, list(by_name))}; "
        "`nuim zoo list` shows the names"
    )


def _cached_entry_file(entry: ZooEntry, download: bool, base_url: Optional[str], progress: bool) -> Path:
    if not entry.released:
        raise _not_released(entry)
    if entry.downloaded:
        return entry.path  # type: ignore[return-value]
    if not download:
        raise UserError(f"'{entry.name}' is not downloaded; run `nuim zoo download {entry.name}`")
    try:
        return download_entry(entry, base_url=base_url, progress=progress)
    except DownloadError as e:
        raise type(e)(f"{e}, or pass a local checkpoint file instead of the zoo name") from None


# --------------------------------------------------------------------------- check


@dataclass
class CheckResult:
    """What ``nuim zoo check`` found for one checkpoint."""

    name: str
    path: Optional[str]
    expected_hash8: Optional[str]
    found_hash8: Optional[str] = None
    hash_ok: Optional[bool] = None  #: None when there was no file to hash
    load_ok: Optional[bool] = None  #: None when loading was not attempted
    detail: str = ""
    tensors: Optional[int] = None  #: tensors in the loaded state dict
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the hash matched and the strict load (if attempted) succeeded."""
        return bool(self.hash_ok) and self.load_ok is not False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``ok``."""
        d = asdict(self)
        d["ok"] = self.ok
        return d


def check_entry(entry: ZooEntry, load: bool = True) -> CheckResult:
    """Re-hash the cached file of ``entry`` and (if ``load``) load it strictly into its preset's model."""
    t0 = time.perf_counter()
    res = CheckResult(name=entry.name, path=str(entry.path) if entry.path else None, expected_hash8=entry.hash8)
    if not entry.released:
        res.detail = "no released checkpoint"
        return res
    if not entry.downloaded:
        res.detail = f"not downloaded (`nuim zoo download {entry.name}`)"
        return res
    expected = entry.hash8 or download.hash_prefix_from_name(entry.checkpoint_url or "")
    res.expected_hash8 = expected
    found = sha256_file(entry.path)  # type: ignore[arg-type]
    res.found_hash8 = found[: len(expected) if expected else 8]
    res.hash_ok = expected is not None and found.startswith(expected)
    if not res.hash_ok:
        res.detail = f"SHA-256 starts with {res.found_hash8}, expected {expected}: the file is damaged; download it again with --force"
    elif load:
        from nuimcli.checkpoints import build_from_checkpoint, load_checkpoint

        try:
            ckpt = load_checkpoint(entry.path)  # type: ignore[arg-type]
            build_from_checkpoint(entry.path, entry.name, checkpoint=ckpt)  # type: ignore[arg-type]
            n = len(ckpt["state_dict"])
            res.load_ok = True
            res.tensors = n
            res.detail = f"{n} tensors loaded strictly"
        except UserError as e:
            res.load_ok = False
            res.detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        except Exception as e:  # noqa: BLE001 — a broken file must be reported, not crash the report
            res.load_ok = False
            res.detail = f"cannot load: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    res.seconds = time.perf_counter() - t0
    return res
