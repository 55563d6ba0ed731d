"""Streamed, resumable, verified file download (HTTP(S) and ``file://``) with the standard library.

One function, :func:`fetch`, gets every file nuimcli needs from the network: released nuImages
checkpoints (``nuim zoo``), ImageNet backbones and COCO ``load_from`` detectors (``nuim train``).

- The body is streamed to ``<file>.part`` next to the destination, with a byte progress bar
  (size, rate, ETA).
- An interrupted download resumes: the next attempt (or the next run) asks for the rest with
  an HTTP ``Range`` header. A server that ignores ``Range`` (answers 200) makes it start over.
- Connection errors, cut connections and 5xx answers are retried a few times with exponential
  backoff; a 4xx answer (404: the file is not there) is not.
- When an expected hash is known (the 8 hex digits mmdet puts in file names, the start of the
  file's SHA-256), the file is verified *before* it is renamed into place: a mismatch deletes
  the download, so nothing unverified ever sits under the final name.
- Mirrors: ``base_url`` (or the ``NUIM_ZOO_URL`` environment variable) replaces the scheme and
  host of an http(s) URL, keeping its path: ``https://host/a/b/c.pth`` is fetched from
  ``<base>/a/b/c.pth``. The base may be a server (``http://lab-server/openmmlab``) or a folder
  (``file:///data/mirror`` or a plain path).

urllib is used rather than ``requests`` so that the package needs nothing beyond the standard
library for this; Range, retries and file URLs are a few lines each.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO, Optional

from rich.markup import escape

from nuimcli import __version__
from nuimcli.errors import EXIT_PARTIAL, UserError
from nuimcli.utils.hashing import sha256_file

#: Environment variable naming a mirror that keeps the upstream layout (see :func:`mirror_url`).
MIRROR_ENV = "NUIM_ZOO_URL"

DEFAULT_RETRIES = 3  #: extra attempts after the first one fails without progress
DEFAULT_BACKOFF = 1.0  #: seconds before the first retry; doubled for each further retry
DEFAULT_TIMEOUT = 30.0  #: seconds without any byte before a connection counts as failed
CHUNK = 1 << 20

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")


class DownloadError(UserError):
    """A file could not be fetched or did not verify (one-line message; exit code 1)."""

    exit_code = EXIT_PARTIAL


class HashMismatch(DownloadError):
    """The downloaded bytes do not have the expected SHA-256 prefix."""


class _Retryable(Exception):
    """A failure worth another attempt (connection trouble, cut body, 5xx)."""


class _Fatal(Exception):
    """A failure another attempt would not fix (404, a missing local file)."""


# --------------------------------------------------------------------------- helpers


def hash_prefix_from_name(name_or_url: str) -> Optional[str]:
    """The hash prefix in a published file name, e.g. ``…_195238-e99f5182.pth`` → ``e99f5182``.

    mmdet's ``publish_model`` and torch.hub both name files ``<stem>-<first hex digits of the
    SHA-256>.<ext>``. Returns None when the name carries no such suffix.
    """
    name = urllib.parse.urlsplit(name_or_url).path.rsplit("/", 1)[-1] if "://" in name_or_url else Path(name_or_url).name
    m = _HASH_IN_NAME.search(name)
    return m.group(1) if m else None


def file_name_of(url: str) -> str:
    """The last path component of a URL (the name the cached file keeps)."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not name:
        raise UserError(f"{url}: the URL names no file")
    return name


def mirror_base() -> Optional[str]:
    """The mirror from ``NUIM_ZOO_URL`` (None when unset or empty)."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return value or None


def _base_as_url(base_url: str) -> str:
    if "://" not in base_url:  # a plain folder path
        return Path(base_url).expanduser().resolve().as_uri()
    return base_url


def mirror_url(url: str, base_url: Optional[str]) -> str:
    """Where ``url`` is fetched from given a mirror: ``<base>/<path of url after the host>``.

    Only http(s) URLs are mapped (a ``file://`` URL already names a local file); ``base_url``
    None returns ``url`` unchanged.
    """
    if not base_url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return url
    return _base_as_url(base_url).rstrip("/") + "/" + parts.path.lstrip("/")


def part_path(dest: Path) -> Path:
    """The name a download in progress has: ``<file>.part``."""
    return dest.with_name(dest.name + ".part")


# --------------------------------------------------------------------------- opening a source


class _Source:
    """An open byte stream positioned at ``offset`` of a remote file of ``total`` bytes (None if unknown)."""

    def __init__(self, stream: BinaryIO, offset: int, total: Optional[int]) -> None:
        self.stream = stream
        self.offset = offset
        self.total = total


def _open_file_url(url: str, offset: int) -> _Source:
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if not path.is_file():
        raise _Fatal(f"no such file {path}")
    total = path.stat().st_size
    f = open(path, "rb")
    if offset > total:
        offset = 0  # the partial file is longer than the source: start over
    f.seek(offset)
    return _Source(f, offset, total)


def _open_http(url: str, offset: int, timeout: float) -> _Source:
    headers = {"User-Agent": f"nuimcli/{__version__}", "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset > 0:
            # The part on disk is not a prefix the server can continue (e.g. already longer).
            raise _RestartFromZero() from None
        if e.code >= 500 or e.code == 429:
            raise _Retryable(f"HTTP {e.code} {e.reason}") from None
        raise _Fatal(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise _Retryable(str(reason)) from None
    length = resp.headers.get("Content-Length")
    length_n = int(length) if length and length.isdigit() else None
    if offset > 0 and resp.status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            resp.close()
            raise _RestartFromZero()
        total = int(m.group(3)) if m.group(3) != "*" else None
        return _Source(resp, offset, total)
    # 200: a full body, whether or not we asked for a range (a server that ignores Range).
    return _Source(resp, 0, length_n)


class _RestartFromZero(Exception):
    """The partial file cannot be continued: drop it and download from the first byte."""


# --------------------------------------------------------------------------- progress


def _byte_progress():
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from nuimcli.utils.progress import err_console

    # make_progress() counts items; a download wants bytes (size done/total, MB/s).
    # a short bar leaves room for size, rate and ETA in an 80-column terminal
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        DownloadColumn(binary_units=True),
        TaskProgressColumn(),
        TransferSpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _shorten(name: str, width: int) -> str:
    """``name`` cut in the middle to ``width`` characters (the hash suffix stays visible)."""
    if len(name) <= width:
        return name
    keep = width - 1
    return name[: keep - keep // 2] + "…" + name[-(keep // 2):]


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


# --------------------------------------------------------------------------- fetch


def _hint(dest: Path) -> str:
    return (
        f"get the file by hand and save it as {dest}, or point {MIRROR_ENV} (--base-url) "
        "at a mirror with the same layout"
    )


def _one_attempt(src_url: str, part: Path, timeout: float, bar, task) -> None:
    """Continue ``part`` from its current size to the end of ``src_url``; raise on trouble."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        if urllib.parse.urlsplit(src_url).scheme == "file":
            src = _open_file_url(src_url, offset)
        else:
            src = _open_http(src_url, offset, timeout)
    except _RestartFromZero:
        part.unlink(missing_ok=True)
        raise _Retryable("the server could not continue the partial download; starting over") from None
    with src.stream:
        mode = "ab" if src.offset > 0 else "wb"  # 0: fresh start, or the server ignored Range
        got = src.offset
        bar.update(task, total=src.total, completed=got)
        # read1: whatever has arrived (up to CHUNK), so a stall loses no received bytes.
        read = getattr(src.stream, "read1", src.stream.read)
        with open(part, mode) as out:
            while True:
                try:
                    block = read(CHUNK)
                except (HTTPException, OSError) as e:  # reset, timeout, incomplete chunk
                    raise _Retryable(f"connection lost after {got} bytes: {e}") from None
                if not block:
                    break
                out.write(block)
                got += len(block)
                bar.update(task, completed=got)
    if src.total is not None and got < src.total:
        # http.client ends a cut body quietly: only the length tells.
        raise _Retryable(f"connection closed after {got} of {src.total} bytes")


def fetch(
    url: str,
    dest: str | os.PathLike,
    expected_hash8: Optional[str] = None,
    base_url: Optional[str] = None,
    progress: bool = True,
    *,
    retries: Optional[int] = None,
    backoff: Optional[float] = None,
    timeout: Optional[float] = None,
    force: bool = False,
    label: Optional[str] = None,
) -> Path:
    """Download ``url`` to ``dest`` (a file path, or an existing folder to keep the URL's file name).

    Args:
        url: http(s) or file:// URL of the upstream file.
        dest: final location. If it already exists (and not ``force``) it is returned as is:
            only verified files are ever renamed there (``nuim zoo check`` re-hashes).
        expected_hash8: hex prefix of the file's SHA-256 (mmdet's 8-digit file-name suffix);
            None skips verification.
        base_url: mirror keeping the upstream layout (see :func:`mirror_url`); None uses
            ``NUIM_ZOO_URL`` when set.
        progress: show a byte progress bar on stderr.
        retries, backoff, timeout: attempt policy (defaults: module constants). A failed
            attempt that received bytes does not use up a retry.
        force: download again even if ``dest`` exists.
        label: name on the progress bar (default: the file name, shortened to 28 characters).

    Returns the final path. Raises :class:`DownloadError` (one line naming the URL and how to
    get the file by hand) or :class:`HashMismatch`.
    """
    retries = DEFAULT_RETRIES if retries is None else retries
    backoff = DEFAULT_BACKOFF if backoff is None else backoff
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / file_name_of(url)
    if dest.exists() and not force:
        return dest
    base = base_url if base_url is not None else mirror_base()
    src_url = mirror_url(url, base)
    scheme = urllib.parse.urlsplit(src_url).scheme
    if scheme not in ("http", "https", "file"):
        raise UserError(f"{src_url}: unsupported URL scheme {scheme!r} (http, https or file)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the folder {dest.parent}: {e.strerror or e}") from None
    part = part_path(dest)
    if force:
        part.unlink(missing_ok=True)
    where = src_url if src_url == url else f"{src_url} (mirror of {url})"

    failures = 0
    label = label or _shorten(dest.name, 28)
    bar = _byte_progress() if progress else _NoProgress()
    with bar:
        task = bar.add_task(escape(label), total=None)
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                _one_attempt(src_url, part, timeout, bar, task)
                break
            except _Retryable as e:
                after = part.stat().st_size if part.exists() else 0
                failures = 0 if after > before else failures + 1
                if failures > retries:
                    raise DownloadError(f"cannot download {where}: {e}; {_hint(dest)}") from None
                time.sleep(backoff * (2 ** max(failures - 1, 0)))
            except _Fatal as e:
                raise DownloadError(f"cannot download {where}: {e}; {_hint(dest)}") from None
            except OSError as e:  # the local side: disk full, permissions
                raise DownloadError(f"cannot write {part}: {e.strerror or e}") from None

        if expected_hash8:
            bar.update(task, description=escape(f"{label} (verifying)"))
            found = sha256_file(part)
            if not found.startswith(expected_hash8.lower()):
                part.unlink(missing_ok=True)
                raise HashMismatch(
                    f"{where}: SHA-256 starts with {found[: len(expected_hash8)]}, expected "
                    f"{expected_hash8}; the download was deleted (nothing kept as {dest.name})"
                )
            bar.update(task, description=escape(label))
    os.replace(part, dest)
    return dest

