"""HTTP for remote stacks: sessions, clear errors, directory listings and range reads.

Built on ``requests`` (blocking, one session per thread from
:func:`~.http_session.make_session`, with its retries). Range reads ask for
many byte ranges in one request (``Range: bytes=a-b,c-d,…``, a
``multipart/byteranges`` answer, as Apache and nginx give); a server that
answers such a request with the whole file is remembered and asked one range
at a time from then on. Logins follow the rules of :mod:`.http_session` (the
address, ``PHOENIX_HTTP_USER`` / ``PHOENIX_HTTP_PASSWORD``, ``~/.netrc``);
error messages never show the password. Listings are parsed by
:mod:`.http_index`, as for downloads.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import LayerStackError
from .http_index import MAX_LISTING_BYTES, child_names
from .http_session import (
    LOGIN_HINT,
    LoginError,
    content_range,
    describe,
    find_login,
    host_auth,
    make_session,
    mask_url,
    public_url,
)

#: merge two missing byte ranges into one when the gap between them is at most
#: this many bytes (a multipart part costs ~100 bytes of headers)
MULTI_GAP = 512
#: the same for servers without multi-range support: one request per range
#: costs a round trip, so wider gaps are fetched along
SINGLE_GAP = 64 * 1024
#: ranges per request (Apache's default MaxRanges is 200; above it, the whole file)
MAX_PARTS = 128
#: bytes asked for in one request at most
MAX_REQUEST_BYTES = 64 << 20
TIMEOUT = (10, 120)
#: retries of a request (connection errors, 5xx) by the session, 0.2 s backoff
RETRIES = 3

_local = threading.local()
#: host -> False once it answered a multi-range request with the whole file
_multi_range: dict[str, bool] = {}


def is_url(path) -> bool:
    """True for ``http://`` and ``https://`` addresses."""
    return isinstance(path, str) and path.lower().startswith(("http://", "https://"))


class RemotePath(str):
    """A URL that answers ``.name``, ``.parent``, ``.suffix`` and ``/`` like a Path."""

    @property
    def name(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self).path.rstrip("/").rsplit("/", 1)[-1])

    @property
    def suffix(self) -> str:
        name = self.name
        return name[name.rfind(".") :] if "." in name else ""

    @property
    def parent(self) -> RemotePath:
        return RemotePath(urllib.parse.urljoin(self.rstrip("/") + "/", ".."))

    def __truediv__(self, other: str) -> RemotePath:
        return RemotePath(self.rstrip("/") + "/" + urllib.parse.quote(str(other)))


def session():
    """This thread's ``requests.Session`` (connection reuse, retries on 5xx and resets)."""
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = make_session(pool_size=8, retries=RETRIES, backoff=0.2)
    return s


def request(method: str, url: str, **kwargs):
    """``session().request`` with the login for ``url`` and failures as :class:`LayerStackError`."""
    import requests

    kwargs.setdefault("timeout", TIMEOUT)
    try:
        kwargs.setdefault("auth", host_auth(url, find_login(url)[1]))
    except LoginError as err:
        raise LayerStackError(str(err)) from None
    try:
        return session().request(method, url, **kwargs)
    except requests.exceptions.Timeout as err:
        raise LayerStackError(
            f"{mask_url(url)}: the server did not answer in time ({type(err).__name__}); "
            "try again later or check your network connection"
        ) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
        host = urllib.parse.urlsplit(url).hostname
        raise LayerStackError(
            f"{mask_url(url)}: cannot reach {host}: {describe(err)}; check the address and "
            "your network connection"
        ) from None


def raise_for_status(resp, url: str) -> None:
    """Raise a :class:`LayerStackError` saying what to do for an error status."""
    code = resp.status_code
    if code < 400:
        return
    where = mask_url(url)
    if code in (401, 403):
        raise LayerStackError(
            f"{where}: the server refuses access (HTTP {code}"
            f"{', a login is required' if code == 401 else ''}); {LOGIN_HINT}"
        )
    if code == 404:
        raise LayerStackError(
            f"{where}: not found on the server (HTTP 404); check the address (open the folder "
            "above it in a web browser to see what it holds)"
        )
    raise LayerStackError(
        f"{where}: the server answered HTTP {code} {resp.reason}; try again later"
    )


@dataclass(frozen=True)
class RemoteInfo:
    """What identifies a version of a remote file: size and validators."""

    size: int
    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def from_headers(cls, headers, size: int) -> RemoteInfo:
        etag = headers.get("ETag")
        if etag and etag.startswith("W/"):  # weak: a changed encoding, not a changed file
            etag = etag[2:]
        return cls(size, etag, headers.get("Last-Modified"))

    def token(self) -> str:
        return f"{self.size}-{self.etag or ''}-{self.last_modified or ''}"


def stat(url: str) -> RemoteInfo:
    """Size and validators of a remote file (a HEAD request; a 1-byte GET if HEAD fails)."""
    headers = {"Accept-Encoding": "identity"}
    resp = request("HEAD", url, headers=headers, allow_redirects=True)
    if resp.status_code < 400 and resp.headers.get("Content-Length"):
        return RemoteInfo.from_headers(resp.headers, int(resp.headers["Content-Length"]))
    if resp.status_code in (401, 403, 404):
        raise_for_status(resp, url)
    resp = request("GET", url, headers={**headers, "Range": "bytes=0-0"}, stream=True)
    with resp:
        raise_for_status(resp, url)
        total = content_range(resp.headers.get("Content-Range"))[2]
        if resp.status_code == 206 and total is not None:
            return RemoteInfo.from_headers(resp.headers, total)
        if resp.headers.get("Content-Length"):
            return RemoteInfo.from_headers(resp.headers, int(resp.headers["Content-Length"]))
    raise LayerStackError(f"{mask_url(url)}: the server does not say how large the file is")


def list_folder(url: str) -> tuple[str, list[str]]:
    """The entries of an Apache-style directory index: ``(folder url, names)``.

    Only links to direct children of the folder count (sub-folders end in
    ``/``); sorting links, parents, absolute links elsewhere are ignored.
    """
    folder = url if url.endswith("/") else url + "/"
    resp = request("GET", folder)
    raise_for_status(resp, folder)
    base = resp.url if resp.url.endswith("/") else resp.url + "/"
    names = child_names(resp.text[:MAX_LISTING_BYTES], public_url(base))
    return folder if public_url(folder) == public_url(base) else base, names


class RangesIgnored(Exception):
    """The server sent the whole file (200) for a range request; ``response`` is open."""

    def __init__(self, response):
        super().__init__("range request answered with the whole file")
        self.response = response


def plan(intervals: list[tuple[int, int]], multi: bool) -> list[list[tuple[int, int]]]:
    """Merge sorted byte ranges with small gaps, and group them into requests."""
    gap = MULTI_GAP if multi else SINGLE_GAP
    merged: list[list[int]] = []
    for a, b in sorted(intervals):
        if merged and a - merged[-1][1] <= gap and b - merged[-1][0] <= MAX_REQUEST_BYTES:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    if not multi:
        return [[(a, b)] for a, b in merged]
    batches: list[list[tuple[int, int]]] = [[]]
    size = 0
    for a, b in merged:
        if batches[-1] and (len(batches[-1]) >= MAX_PARTS or size + b - a > MAX_REQUEST_BYTES):
            batches.append([])
            size = 0
        batches[-1].append((a, b))
        size += b - a
    return batches


def fetch_ranges(
    url: str, intervals: list[tuple[int, int]], info: RemoteInfo, whole_ok: bool
) -> Iterator[tuple[int, bytes]]:
    """Fetch byte ranges ``[a, b)``: yields ``(offset, bytes)`` pieces covering them.

    Raises :class:`RangesIgnored` when the server sends the whole file instead and
    ``whole_ok`` (the caller takes the stream), or a :class:`LayerStackError`.
    """
    host = urllib.parse.urlsplit(public_url(url)).netloc
    for batch in plan(intervals, _multi_range.get(host, True)):
        for attempt in range(3):
            try:
                parts = _fetch_batch(url, batch, info, whole_ok)
                break
            except _BrokenBody as err:
                if attempt == 2:
                    raise LayerStackError(
                        f"{mask_url(url)}: the connection broke off three times ({err}); "
                        "try again later"
                    ) from None
        if parts is None:  # no multi-range support: one range per request from now on
            _multi_range[host] = False
            yield from fetch_ranges(url, batch, info, whole_ok)
        else:
            yield from parts


class _BrokenBody(Exception):
    pass


def _fetch_batch(url, batch, info, whole_ok) -> list[tuple[int, bytes]] | None:
    spec = ",".join(f"{a}-{b - 1}" for a, b in batch)
    headers = {"Range": f"bytes={spec}", "Accept-Encoding": "identity"}
    resp = request("GET", url, headers=headers, stream=True)
    if resp.status_code == 200:
        if whole_ok:
            raise RangesIgnored(resp)
        resp.close()
        if len(batch) > 1:
            return None
        raise LayerStackError(
            f"{mask_url(url)}: the server does not support range requests (HTTP Range), so "
            f"this {info.size / 1e6:,.0f} MB file could only be read whole for every "
            "window; download the files and open them locally"
        )
    with resp:
        raise_for_status(resp, url)
        if resp.status_code != 206:
            raise LayerStackError(
                f"{mask_url(url)}: unexpected HTTP {resp.status_code} to a range request"
            )
        _check_same_file(resp, url, info)
        try:
            body = resp.content
        except Exception as err:  # the connection dropped midway
            raise _BrokenBody(str(err)[:200]) from None
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("multipart/byteranges"):
            return list(_multipart(body, ctype, url))
        start, stop = _byte_range(resp.headers.get("Content-Range", ""), url)
        if len(body) != stop - start:
            raise _BrokenBody(f"{len(body)} of {stop - start} bytes")
        return [(start, body)]


def _byte_range(value: str, url: str) -> tuple[int, int]:
    start, stop, _ = content_range(value)
    if start is None:
        raise LayerStackError(
            f"{mask_url(url)}: a range answer without a valid Content-Range ({value!r})"
        )
    return start, stop


def _check_same_file(resp, url: str, info: RemoteInfo) -> None:
    total = content_range(resp.headers.get("Content-Range"))[2]
    etag = RemoteInfo.from_headers(resp.headers, 0).etag
    if (total is not None and total != info.size) or (etag and info.etag and etag != info.etag):
        raise LayerStackError(
            f"{mask_url(url)}: the file changed on the server while it was open; open it again"
        )


def _multipart(body: bytes, ctype: str, url: str) -> Iterator[tuple[int, bytes]]:
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise LayerStackError(f"{mask_url(url)}: a multipart answer without a boundary")
    delim = b"--" + m.group(1).encode()
    pos = 0
    while True:
        i = body.find(delim, pos)
        if i < 0 or body[i + len(delim) : i + len(delim) + 2] == b"--":
            return
        head_end = body.find(b"\r\n\r\n", i)
        if head_end < 0:
            raise LayerStackError(f"{mask_url(url)}: a malformed multipart answer")
        head = body[i + len(delim) : head_end].decode("latin-1")
        cr = re.search(r"(?im)^content-range:\s*(.*)$", head)
        start, stop = _byte_range(cr.group(1) if cr else "", url)
        data = body[head_end + 4 : head_end + 4 + stop - start]
        if len(data) != stop - start:
            raise _BrokenBody(f"a part of {len(data)} of {stop - start} bytes")
        yield start, data
        pos = head_end + 4 + len(data)
