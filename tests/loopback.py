"""A small HTTP file server on loopback for the download and remote-reading tests.

It serves a folder like the public scroll data server does: Apache-style
directory index pages, ``Content-Length``, ``HEAD`` and ``Range`` requests.
Opt-in features of real servers (off by default): ``validators`` sends
``ETag`` / ``Last-Modified`` and answers conditional requests with 304;
``multi_range`` answers ``Range: bytes=a-b,c-d`` with a ``multipart/byteranges``
206 (off: such a request gets the whole file, as from a server without it).
Faults are switched on per test: no Range support, a connection dropped midway
through a file, error statuses (always, or the first ``n`` times), pages
replaced by hand-written HTML (malicious or odd listings), basic auth. Every
request and every body byte sent is counted, per path.

Use the ``http_server`` fixture (``tests/conftest.py``)::

    def test_x(http_server, tmp_path):
        srv = http_server(tmp_path / "site")
        srv.url            # 'http://127.0.0.1:PORT/'
        srv.drop["/seg/layers/00.tif"] = 1000   # close after 1,000 body bytes, once
"""

from __future__ import annotations

import base64
import email.utils
import html
import os
import re
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class LoopbackServer:
    """State and switches of one running server (all mutable from the test)."""

    root: Path
    url: str = ""
    range_support: bool = True
    #: send ETag / Last-Modified and answer If-None-Match / If-Modified-Since with 304
    validators: bool = False
    #: answer multi-range requests with multipart/byteranges (else the whole file, 200)
    multi_range: bool = False
    #: path -> body bytes to send before dropping the connection (applies once per entry)
    drop: dict[str, int] = field(default_factory=dict)
    #: path -> status code returned every time
    status: dict[str, int] = field(default_factory=dict)
    #: path -> [status, times]: return ``status`` the first ``times`` requests, then serve normally
    flaky: dict[str, list] = field(default_factory=dict)
    #: path -> raw HTML served instead of the generated index page
    pages: dict[str, str] = field(default_factory=dict)
    #: (user, password) required as basic auth, or None
    auth: tuple[str, str] | None = None
    requests: Counter = field(default_factory=Counter)  # path -> GET/HEAD count
    #: path -> body bytes sent, counted before the headers go out: a client that has
    #: its answer (or gave up on it after the headers) is already counted, even if the
    #: handler thread has not yet run on (else a loaded machine makes counts lag)
    sent: Counter = field(default_factory=Counter)
    range_requests: Counter = field(default_factory=Counter)  # path -> GETs with a Range header
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bytes_sent(self) -> int:
        return sum(self.sent.values())

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.sent.clear()
            self.range_requests.clear()


def index_page(path: str, names: list[str]) -> str:
    """An Apache-style listing (``<a href="name">``; folders end in ``/``)."""
    rows = "\n".join(
        f'<tr><td><a href="{urllib.parse.quote(n)}">{html.escape(n)}</a></td><td>-</td></tr>'
        for n in names
    )
    return (
        f"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html><head><title>Index of {html.escape(path)}"
        f"</title></head><body><h1>Index of {html.escape(path)}</h1><table>\n"
        f'<tr><th>Name</th><th>Size</th></tr>\n<tr><td><a href="../">Parent Directory</a></td></tr>\n'
        f"{rows}\n</table></body></html>\n"
    )


def _handler(state: LoopbackServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes: without TCP_NODELAY every
        # small answer waits ~40 ms for the client's delayed ACK
        disable_nagle_algorithm = True

        def log_message(self, *args):  # quiet
            pass

        def _path(self) -> str:
            return urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)

        def _error(self, code: int) -> None:
            body = f"<html><body>{code}</body></html>".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorised(self) -> bool:
            if state.auth is None:
                return True
            want = base64.b64encode(":".join(state.auth).encode()).decode()
            return self.headers.get("Authorization", "") == f"Basic {want}"

        def do_HEAD(self):  # noqa: N802
            self._serve(head=True)

        def do_GET(self):  # noqa: N802
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            path = self._path()
            with state.lock:
                state.requests[path] += 1
                if self.headers.get("Range") and not head:
                    state.range_requests[path] += 1
            if not self._authorised():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="data"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path in state.status:
                return self._error(state.status[path])
            with state.lock:
                flaky = state.flaky.get(path)
                if flaky and flaky[1] > 0:
                    flaky[1] -= 1
                    code = flaky[0]
                else:
                    code = None
            if code:
                return self._error(code)
            if path in state.pages:
                return self._send_bytes(state.pages[path].encode(), "text/html", head, path)
            target = (state.root / path.lstrip("/")).resolve()
            if state.root.resolve() not in (target, *target.parents) or not target.exists():
                return self._error(404)
            if target.is_dir():
                if not path.endswith("/"):
                    self.send_response(301)
                    self.send_header("Location", path + "/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                names = sorted(p.name + ("/" if p.is_dir() else "") for p in target.iterdir())
                return self._send_bytes(index_page(path, names).encode(), "text/html", head, path)
            return self._send_file(target, head, path)

        def _send_bytes(self, body: bytes, ctype: str, head: bool, path: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if not head:
                with state.lock:
                    state.sent[path] += len(body)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _validators(self, target: Path) -> dict[str, str]:
            if not state.validators:
                return {}
            st = target.stat()
            return {
                "ETag": f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
                "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
            }

        def _not_modified(self, tags: dict[str, str]) -> bool:
            if not tags:
                return False
            etag = self.headers.get("If-None-Match")
            if etag is not None:
                return etag.strip() == tags["ETag"]
            since = self.headers.get("If-Modified-Since")
            return since is not None and since.strip() == tags["Last-Modified"]

        def _send_multi(self, target: Path, rng: str, tags: dict[str, str]) -> bool:
            """A multipart/byteranges 206 for ``bytes=a-b,c-d,...``; False if not such a request."""
            size = target.stat().st_size
            parts = []
            for item in rng.strip().removeprefix("bytes=").split(","):
                m = re.fullmatch(r"\s*(\d+)-(\d+)\s*", item)
                if not rng.strip().startswith("bytes=") or not m or int(m.group(1)) >= size:
                    return False
                parts.append((int(m.group(1)), min(size, int(m.group(2)) + 1)))
            boundary = "LOOPBACKBOUNDARY"
            heads = [
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {a}-{b - 1}/{size}\r\n\r\n".encode()
                for a, b in parts
            ]
            tail = f"\r\n--{boundary}--\r\n".encode()
            length = sum(len(h) + b - a for h, (a, b) in zip(heads, parts)) + len(tail)
            self.send_response(206)
            self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
            self.send_header("Content-Length", str(length))
            for k, v in tags.items():
                self.send_header(k, v)
            with state.lock:
                state.sent[self._path()] += length
            self.end_headers()
            with open(target, "rb") as f:
                for h, (a, b) in zip(heads, parts):
                    f.seek(a)
                    self.wfile.write(h + f.read(b - a))
                self.wfile.write(tail)
            return True

        def _send_file(self, target: Path, head: bool, path: str) -> None:
            size = target.stat().st_size
            start, stop = 0, size
            tags = self._validators(target)
            if self._not_modified(tags):
                self.send_response(304)
                for k, v in tags.items():
                    self.send_header(k, v)
                self.end_headers()
                return
            rng = self.headers.get("Range") if state.range_support else None
            if rng and "," in rng and state.multi_range and not head and self._send_multi(target, rng, tags):
                return
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    stop = min(size, int(m.group(2)) + 1) if m.group(2) else size
                else:  # suffix range: the last n bytes
                    start = max(0, size - int(m.group(2)))
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(stop - start))
            if state.range_support:
                self.send_header("Accept-Ranges", "bytes")
            for k, v in tags.items():
                self.send_header(k, v)
            if not head:
                with state.lock:
                    limit = state.drop.pop(path, None)
                    state.sent[path] += stop - start if limit is None else max(0, min(limit, stop - start))
            self.end_headers()
            if head:
                return
            with open(target, "rb") as f:
                f.seek(start)
                left = stop - start
                while left > 0:
                    piece = f.read(min(left, 65536))
                    if limit is not None:
                        piece = piece[: max(0, limit)]
                        limit -= len(piece)
                    if piece:
                        self.wfile.write(piece)
                        left -= len(piece)
                    if limit is not None and limit <= 0:  # drop the connection midway
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return

    return Handler


def start(root: os.PathLike, **switches) -> tuple[LoopbackServer, ThreadingHTTPServer]:
    """Serve ``root`` on ``127.0.0.1`` on a free port, in a daemon thread."""
    state = LoopbackServer(Path(root), **switches)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    # a short poll interval: shutdown() at the end of each test returns at once
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return state, server
