"""`probebench data download` against a local HTTP server on 127.0.0.1 serving a small archive made here:
a clean download, a truncated one that resumes with a Range request, a corrupted one caught by its checksum,
an archive that tries to escape its folder, and a dataset that needs a manual step."""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from probebench import cli
from probebench.data import catalog
from probebench.data.download import fetch, unpack_archive
from probebench.errors import UserError


def voc_tar() -> bytes:
    """A VOCdevkit/VOC2007 tree with 3 images, as the official tar unpacks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        ids = ["000001", "000002", "000003"]
        add("VOCdevkit/VOC2007/ImageSets/Main/trainval.txt", "\n".join(ids).encode())
        for i in ids:
            img = io.BytesIO()
            Image.new("RGB", (32, 24), (int(i) * 40, 0, 0)).save(img, "JPEG")
            add(f"VOCdevkit/VOC2007/JPEGImages/{i}.jpg", img.getvalue())
            xml = (
                f"<annotation><filename>{i}.jpg</filename><size><width>32</width><height>24</height></size>"
                "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin>"
                "<xmax>20</xmax><ymax>15</ymax></bndbox></object></annotation>"
            )
            add(f"VOCdevkit/VOC2007/Annotations/{i}.xml", xml.encode())
    return buf.getvalue()


class Server:
    """Serves one payload; modes: 'ok', 'truncate' (half the body, then close), 'corrupt' (flipped bytes)."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.mode, self.ranges = payload, "ok", []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(rng.split("=")[1].split("-")[0])
                    outer.ranges.append(start)
                body = outer.payload[start:]
                if outer.mode == "corrupt":
                    body = bytes(b ^ 0xFF for b in body)
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.mode == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    outer.mode = "ok"  # the next request succeeds
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/voc.tar"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server(voc_tar())
    yield srv
    srv.close()


@pytest.fixture
def small_voc07(server, monkeypatch):
    spec = "md5:" + hashlib.md5(server.payload).hexdigest()  # noqa: S324 - the checksum VOC publishes
    named = catalog.CatalogEntry(
        "voc07",
        "voc",
        "voc07/VOCdevkit/VOC2007",
        {"trainval": 3},
        "Get VOC.",
        download=(server.url, "voc.tar", spec),
    )
    monkeypatch.setitem(catalog.CATALOG, "voc07", named)
    return named


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["probebench", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_download_verifies_and_extracts(tmp_path, small_voc07, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "data", "download", "voc07", "--data-root", str(tmp_path))
    assert code == 0, err
    assert "voc07: 3 images" in out
    assert (tmp_path / "voc07" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000002.jpg").is_file()
    assert not list(tmp_path.glob(".voc07.extracting-*")) and not list(
        (tmp_path / ".downloads").glob("*.part")
    )


def test_truncated_download_resumes_with_range(tmp_path, server, small_voc07):
    server.mode = "truncate"
    dest = tmp_path / "voc.tar"
    with pytest.raises(UserError, match="run the same command again to resume"):
        fetch(server.url, dest, small_voc07.download[2], progress=False)
    part = dest.with_name("voc.tar.part")
    assert 0 < part.stat().st_size < len(server.payload)
    fetch(server.url, dest, small_voc07.download[2], progress=False)
    assert server.ranges == [len(server.payload) // 2], "the second request asked only for the missing bytes"
    assert dest.read_bytes() == server.payload


def test_corrupted_download_is_deleted_and_reported(tmp_path, server, small_voc07):
    server.mode = "corrupt"
    dest = tmp_path / "voc.tar"
    with pytest.raises(UserError, match="does not match its checksum md5:"):
        fetch(server.url, dest, small_voc07.download[2], progress=False)
    assert not dest.exists() and not dest.with_name("voc.tar.part").exists()


def test_archive_escaping_its_folder_is_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UserError, match="outside"):
        unpack_archive(evil, tmp_path / "target")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "target").exists()


def test_manual_dataset_says_what_to_do(tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(
        monkeypatch, capsys, "data", "download", "pascal_part", "--data-root", str(tmp_path)
    )
    assert code == 1 and "needs a manual step" in out and "Google Drive" in out
    code, _, err = run_cli(monkeypatch, capsys, "data", "download", "nope")
    assert code == 2 and "unknown dataset 'nope'" in err
