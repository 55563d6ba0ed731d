"""Test helpers for the zoo and download tests: a real HTTP server on 127.0.0.1 with faults,
generated checkpoint files named with their true hash, and a fake registry made of presets.

Not a test module (no ``test_`` prefix); imported by tests/test_download.py, tests/test_zoo.py
and tests/cli/test_zoo_cli.py.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import pytest

RELEASE_DIR = "/mmdetection3d/v0.1.0_models/nuimages_semseg"


@dataclass
class Request:
    path: str
    range: Optional[str]
    status: int = 0


@dataclass
class FileServer:
    """Serves ``files`` (URL path → bytes) with Range support and one-shot faults per path.

    Faults (``faults[path]`` is a list, one item consumed per request):
    ``"404"``, ``"500"``, ``"cut"`` (headers announce the whole body, half of it is sent,
    then the connection is closed), ``"stall"`` (half the body, then silence for
    ``stall_seconds``), ``"corrupt"`` (same length, one byte flipped).
    Paths in ``ignore_range`` always answer 200 with the whole body.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    stall_seconds: float = 1.0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


def _handler(state: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a cut is a closed socket

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):  # noqa: N802
            req = Request(self.path, self.headers.get("Range"))
            state.requests.append(req)
            queue = state.faults.get(self.path) or []
            fault = queue.pop(0) if queue else None
            if self.path not in state.files or fault == "404":
                req.status = 404
                self.send_error(404)
                return
            if fault == "500":
                req.status = 500
                self.send_error(500)
                return
            body = state.files[self.path]
            if fault == "corrupt":
                body = body[:-1] + bytes([body[-1] ^ 0xFF])
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", req.range or "")
            if m and self.path not in state.ignore_range:
                start = int(m.group(1))
                if start >= len(body):
                    req.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                req.status = 206
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                req.status = 200
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if fault == "stall":
                self.wfile.write(rest[: len(rest) // 2])
                self.wfile.flush()
                time.sleep(state.stall_seconds)
                return
            if fault == "cut":
                self.wfile.write(rest[: len(rest) // 2])
                self.wfile.flush()
                return  # HTTP/1.0: the server closes the connection here
            self.wfile.write(rest)

    return Handler


@pytest.fixture
def server():
    """A running :class:`FileServer` on 127.0.0.1 (stopped after the test)."""
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Nothing touches the user's cache or mirror settings; retries never wait long."""
    from nuimcli import download

    home = tmp_path / "nuim_home"
    monkeypatch.setenv("NUIM_HOME", str(home))
    monkeypatch.delenv("NUIM_ZOO_URL", raising=False)
    monkeypatch.setattr(download, "DEFAULT_BACKOFF", 0.001)
    monkeypatch.setattr(download, "DEFAULT_TIMEOUT", 5.0)
    return home


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_bytes(seed: int = 0, numel: int = 40_000) -> bytes:
    """A small mmdet-style checkpoint file (``meta`` + ``state_dict``) as bytes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ckpt = {"meta": {"seed": seed}, "state_dict": {"w": torch.randn(numel, generator=g)}}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def published_name(stem: str, data: bytes) -> str:
    """``<stem>-<first 8 hex of SHA-256>.pth``, as mmdet's publish_model names files."""
    return f"{stem}-{sha256(data)[:8]}.pth"


def release_path(config: str, data: bytes, stamp: str = "20240101_000000") -> str:
    """URL path of a released file in the upstream layout."""
    return f"{RELEASE_DIR}/{config}/{published_name(f'{config}_{stamp}', data)}"


def write_presets(dest: Path, rows: dict[str, Optional[str]], base: str = "mask-rcnn-r18-tiny") -> Path:
    """A presets folder: the tiny preset (and its base) plus one row per ``rows`` item.

    ``rows`` maps a preset name to its checkpoint URL (None: a row without a released file).
    Each row is the ``base`` preset's model (the tiny one by default; ``base`` must derive from
    ``_mask-rcnn``) with a ``release`` block whose hash8 is read from the URL.
    """
    from nuimcli.download import hash_prefix_from_name
    from nuimcli.presets import presets_dir

    dest.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(("_mask-rcnn", "mask-rcnn-r18-tiny", base)):
        shutil.copy(presets_dir() / f"{name}.yaml", dest / f"{name}.yaml")
    for i, (name, url) in enumerate(rows.items(), 1):
        h = hash_prefix_from_name(url) if url else None
        lines = [
            f"base: {base}",
            f"description: test row {name}",
            "release:",
            f"  row: {i}",
            f"  config: {name.replace('-', '_')}",
            "  pretrain: IN",
            "  schedule: 1x",
            f"  mem_gb: {1.0 + i}",
            f"  box_ap: {10.0 + i}",
            f"  mask_ap: {5.0 + i}",
            f"  checkpoint_url: {url or 'null'}",
            f"  hash8: {repr(h) if h else 'null'}",
            "  log_url: null",
        ]
        (dest / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return dest


def use_presets(monkeypatch, folder: Path) -> None:
    """Make the registry read ``folder`` instead of the packaged presets."""
    import nuimcli.presets

    monkeypatch.setattr(nuimcli.presets, "presets_dir", lambda: folder)
