"""HTTP requests of a download: retries, listings, probes, one file.

The session and the login come from :mod:`.http_session` (the rules for
logins are the same as for remote reading); messages carry URLs without the
login. :func:`fetch_file` brings one file in resumably: into
``NAME.partial``, continued with a ``Range`` request after an interruption
(from zero when the server ignores ``Range``), checked against the server's
size, then renamed onto ``NAME``.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import requests

from .http_index import MAX_LISTING_BYTES, DownloadError
from .http_session import LOGIN_HINT, content_range, describe, retryable

PARTIAL = ".partial"


# ---- requests with retries ----------------------------------------------------------------


@dataclass
class Requester:
    """A session plus the retry policy, shared by the listing and download threads."""

    session: requests.Session
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0
    stopped: Callable[[], bool] = lambda: False
    secret: str | None = None
    #: called as ``on_retry(what, reason, attempt)`` before each retry
    on_retry: Callable[[str, str, int], None] | None = None

    def pause(self, attempt: int) -> bool:
        """Sleep the backoff of ``attempt`` (1-based) in small steps; False if stopped meanwhile."""
        end = time.monotonic() + min(60.0, self.backoff * 2 ** (attempt - 1))
        while time.monotonic() < end:
            if self.stopped():
                return False
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        return not self.stopped()

    def retry(self, what: str, reason: str, attempt: int) -> None:
        """Wait before retry ``attempt``, or raise when retries are used up or the job stops."""
        if attempt > self.retries:
            raise DownloadError(f"{what}: {reason}, still after {self.retries} retries")
        if self.on_retry is not None:
            self.on_retry(what, reason, attempt)
        if not self.pause(attempt):
            raise DownloadError(f"{what}: stopped")

    def get(self, url: str, what: str, method: str = "GET", **kwargs) -> requests.Response:
        """``method`` ``url`` until it answers other than 5xx / 429 / a connection error."""
        attempt = 0
        while True:
            try:
                r = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as err:
                attempt += 1
                self.retry(what, describe(err, self.secret), attempt)
                continue
            if retryable(r.status_code):
                r.close()
                attempt += 1
                self.retry(what, f"HTTP {r.status_code}", attempt)
                continue
            return r


def status_error(r: requests.Response, what: str) -> DownloadError:
    """The error for a 4xx answer, saying what to do."""
    code = r.status_code
    if code in (401, 403):
        return DownloadError(f"{what}: HTTP {code} {r.reason} (login refused or needed): {LOGIN_HINT}")
    if code == 404:
        return DownloadError(f"{what}: HTTP 404 Not Found (check the URL)")
    return DownloadError(f"{what}: HTTP {code} {r.reason}")


def fetch_listing(req: Requester, url: str, what: str) -> str:
    """The HTML of the index page at ``url`` (a folder URL ending in ``/``)."""
    r = req.get(url, what, stream=True)
    with r:
        if r.status_code >= 400:
            raise status_error(r, what)
        ctype = r.headers.get("Content-Type", "")
        if "html" not in ctype:
            raise DownloadError(f"{what}: not a folder listing (Content-Type {ctype or 'missing'})")
        body = r.raw.read(MAX_LISTING_BYTES + 1, decode_content=True)
        if len(body) > MAX_LISTING_BYTES:
            raise DownloadError(f"{what}: listing larger than {MAX_LISTING_BYTES >> 20} MB; not a folder listing?")
        charset = r.encoding if "charset=" in ctype.lower() else "utf-8"
        return body.decode(charset or "utf-8", errors="replace")


def probe(req: Requester, url: str, what: str) -> tuple[bool, int | None]:
    """``(is_folder, size)`` of a link without a trailing slash (HEAD; GET headers if HEAD is refused).

    A folder shows as a redirect to ``name/`` or an HTML answer for a name
    without a suffix; a file's size is its ``Content-Length`` (None if absent).
    """
    headers = {"Accept-Encoding": "identity"}
    r = req.get(url, what, method="HEAD", headers=headers, allow_redirects=True)
    if r.status_code in (405, 501):  # HEAD not allowed: the headers of a GET, without its body
        r.close()
        r = req.get(url, what, headers=headers, allow_redirects=True, stream=True)
    with r:
        if r.status_code >= 400:
            raise status_error(r, what)
        final = urllib.parse.urlsplit(r.url).path
        redirected_to_folder = final.endswith("/") and not urllib.parse.urlsplit(url).path.endswith("/")
        name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
        html_without_suffix = "html" in r.headers.get("Content-Type", "") and "." not in name
        if redirected_to_folder or html_without_suffix:
            return True, None
        length = r.headers.get("Content-Length")
        return False, int(length) if length and length.isdigit() else None


# ---- progress ------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass
class ByteMeter:
    """Bytes done, shared by the threads; speed over the last few seconds."""

    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n

    def speed(self) -> float:
        now = time.monotonic()
        self.samples.append((now, self.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > 5.0:
            self.samples.popleft()
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0


# ---- one file ----------------------------------------------------------------------------


class _Transient(Exception):
    """A retryable failure seen by us (a 5xx status, a short body)."""


def file_size(path: Path) -> int | None:
    """Size of ``path`` in bytes, or None if it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def fetch_file(req: Requester, url: str, final: Path, size: int | None, what: str,
               block_size: int = 2**20, on_bytes: Callable[[int], None] = lambda n: None) -> str:  # fmt: skip
    """Bring one file to ``final`` through ``final.partial``, resuming and retrying.

    Parameters
    ----------
    req : Requester
        Session, retry policy and stop flag.
    url : str
        The file's URL.
    final : Path
        Where the complete file goes (checked by the caller to be safe).
    size : int, optional
        The server's size from a HEAD request: a file of that size is skipped.
    what : str
        The file's name in messages.
    block_size : int
        Bytes read at a time; the stop flag is checked between blocks.
    on_bytes : callable
        Called with the bytes added to the ``.partial`` file (negative when it
        is started again from zero).

    Returns
    -------
    str
        ``"downloaded"``, ``"skipped"`` (already complete) or ``"stopped"``
        (the ``.partial`` file is kept for a later run).

    Raises
    ------
    DownloadError
        A 4xx answer, or failures still after the retries.
    """
    part = final.with_name(final.name + PARTIAL)
    if size is not None and file_size(final) == size:
        return "skipped"
    final.parent.mkdir(parents=True, exist_ok=True)
    have, attempt, expected = file_size(part) or 0, 0, size

    def restart() -> int:
        on_bytes(-have)
        part.unlink(missing_ok=True)
        return 0

    while True:
        if req.stopped():
            return "stopped"
        if expected is not None and have > expected:  # left from a bigger version of the file
            have = restart()
        if expected is not None and have == expected and have > 0:
            break  # the .partial is complete: only the rename was missing
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        got = 0
        try:
            with req.session.get(url, headers=headers, stream=True, timeout=req.timeout) as r:
                if retryable(r.status_code):
                    raise _Transient(f"HTTP {r.status_code}")
                if r.status_code == 416 and have:  # the .partial holds the whole file, or more
                    expected = content_range(r.headers.get("Content-Range"))[2]
                    have = have if expected == have else restart()
                    continue
                if r.status_code >= 400:
                    raise status_error(r, what)
                length = r.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                if r.status_code == 206:
                    first, _, total = content_range(r.headers.get("Content-Range"))
                    if first != have:
                        have = restart()
                        raise _Transient("the server sent another byte range than asked")
                    mode, expected = "ab", total if total is not None else expected
                else:  # 200: the whole file (a server without Range support starts again from zero)
                    have = restart() if have else 0
                    mode, expected = "wb", length if length is not None else expected
                    if size is None and expected is not None and file_size(final) == expected:
                        return "skipped"
                r.raw.enforce_content_length = False  # keep the bytes of a dropped connection; checked below
                with open(part, mode) as fh:
                    for block in r.iter_content(block_size):
                        if req.stopped():
                            return "stopped"
                        fh.write(block)
                        have, got = have + len(block), got + len(block)
                        on_bytes(len(block))
            if expected is not None and have != expected:
                if have > expected:
                    have = restart()
                raise _Transient(f"connection closed after {have:,} of {expected:,} bytes")
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                _Transient) as err:  # fmt: skip
            attempt = 1 if got else attempt + 1  # progress was made: the retries start over
            req.retry(what, describe(err, req.secret), attempt)
    with open(part, "ab") as fh:  # an empty file has no .partial yet
        os.fsync(fh.fileno())
    if expected is not None and file_size(part) != expected:
        raise DownloadError(f"{what}: got {file_size(part):,} bytes, the server announced {expected:,}")
    os.replace(part, final)
    return "downloaded"
