"""Mirror a folder of the scroll data server (an HTTP directory listing) into a local folder.

::

    download("https://dl.ash2txt.org/community-uploads/<user>/scrolls/s5/autogens/<segment>/",
             "data/<segment>", layers=(5, 20))

The listing is read recursively (:mod:`.http_index` parses the pages and
refuses links that would leave the folder; the login follows the rules of
:mod:`.http_session`) and the selected files are fetched
by a pool of threads, keeping their layout below the start URL. A selection
is a sub-folder, a range of layer numbers (``layers/NN.tif``) and include /
exclude glob patterns.

Resumable and safe: each file arrives as ``NAME.partial``, continued with an
HTTP ``Range`` request after an interruption (from zero when the server
ignores ``Range``), checked against the server's size and renamed onto
``NAME`` when complete, so a file under its final name is always whole. A
rerun skips files whose size matches the server's. Timeouts, dropped
connections and 5xx answers are retried with exponential backoff; a 404 fails
that file only, and the job reports every failed file at the end. A
``cancel`` event (Ctrl-C in the CLI) stops within one read block.
``.phoenix-download.json`` in the destination records the source (never a
password), the settings, the files and their sizes.
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .._version import __version__
from .atomic import atomic_path
from .http_crawl import Crawl, ListedFile
from .http_fetch import PARTIAL, ByteMeter, Requester, fetch_file, file_size, human_bytes
from .http_index import DownloadError, check_rel, inside
from .http_session import LoginError, find_login, host_auth, make_session, public_url, scrub
from .progress import Progress

__all__ = ["DownloadError", "DownloadParams", "DownloadResult", "DownloadStatus", "download", "iter_download"]

MANIFEST = ".phoenix-download.json"
_LAYER_FILE = re.compile(r"^(\d+)\.(tif|tiff|png|jpg|jpeg)$", re.IGNORECASE)


@dataclass(frozen=True)
class DownloadParams:
    """Everything that defines a download (widget, API, CLI and manifest share it).

    Attributes
    ----------
    url : str
        The folder to mirror (an HTTP directory listing), or one file.
    dest : str
        Local folder that receives the files, in their layout below ``url``.
    subfolder : str, optional
        Only this sub-folder of ``url`` (e.g. ``"layers"``).
    layers : (int, int), optional
        Only layer files ``layers/NN.tif`` numbered ``first..last`` (inclusive);
        other files are not affected.
    include : tuple of str
        Glob patterns; only files matching one are fetched. A pattern with a
        ``/`` is matched against the path below ``url``, else the file name.
    exclude : tuple of str
        Glob patterns of files (and folders, which are then not listed) to skip.
    workers : int
        Parallel connections.
    max_depth : int
        Folders nested deeper than this below ``url`` are not listed (reported).
    max_files : int
        Refuse a selection of more files than this.
    allow_hosts : tuple of str
        Other host names whose links are followed (same paths below ``url``).
    retries : int
        Retries of a request after a timeout, a dropped connection or a 5xx.
    backoff : float
        Seconds before the first retry; doubled at each next one.
    timeout : float
        Seconds to wait for a connection or for data.
    block_size : int
        Bytes read at a time (a cancel takes effect between two blocks).
    netrc : str, optional
        A netrc file with the host's login (default: ``$NETRC`` or ``~/.netrc``).
    """

    url: str
    dest: str
    subfolder: str | None = None
    layers: tuple[int, int] | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    workers: int = 4
    max_depth: int = 10
    max_files: int = 100_000
    allow_hosts: tuple[str, ...] = ()
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0
    block_size: int = 2**20
    netrc: str | None = None

    def __post_init__(self):
        setattr_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        setattr_("url", str(self.url).strip())
        setattr_("dest", str(self.dest))
        for name in ("include", "exclude", "allow_hosts"):
            value = getattr(self, name)
            setattr_(name, tuple(str(v).strip() for v in ((value,) if isinstance(value, str) else value) if str(v).strip()))
        setattr_("allow_hosts", tuple(h.lower() for h in self.allow_hosts))
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https") or not urllib.parse.urlsplit(self.url).hostname:
            raise DownloadError(f"the URL must start with http:// or https://, got {public_url(self.url)!r}")
        if self.subfolder is not None:
            sub = str(self.subfolder).strip().strip("/")
            setattr_("subfolder", check_rel(sub) if sub else None)
        if self.layers is not None:
            first, last = (int(v) for v in self.layers)
            if not 0 <= first <= last:
                raise DownloadError(f"layers must be a range first-last with 0 <= first <= last, got {first}-{last}")
            setattr_("layers", (first, last))
        for name, low in (("workers", 1), ("max_depth", 0), ("max_files", 1), ("retries", 0), ("block_size", 1)):
            if int(getattr(self, name)) < low:
                raise DownloadError(f"{name} must be at least {low}, got {getattr(self, name)}")

    def __repr__(self) -> str:  # never shows a password given in the URL
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.name != "url")
        return f"DownloadParams(url={public_url(self.url)!r}, {shown})"

    def wants(self, rel: str) -> bool:
        """True if the file at ``rel`` (below the start URL) is selected.

        Parameters
        ----------
        rel : str
            ``/``-separated path below the start URL.
        """
        parts = rel.split("/")
        if self.subfolder and not rel.startswith(self.subfolder + "/"):
            return False
        m = _LAYER_FILE.match(parts[-1])
        if self.layers and m and len(parts) > 1 and parts[-2] == "layers":
            if not self.layers[0] <= int(m.group(1)) <= self.layers[1]:
                return False
        if self.include and not any(_match(p, rel) for p in self.include):
            return False
        return not self.excluded(rel)

    def excluded(self, rel: str) -> bool:
        """True if ``rel`` (a file or folder) matches an exclude pattern."""
        return any(_match(p.rstrip("/"), rel) for p in self.exclude)


def _match(pattern: str, rel: str) -> bool:
    return fnmatch.fnmatchcase(rel, pattern) if "/" in pattern else fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern)


def parse_layer_range(text: str | None) -> tuple[int, int] | None:
    """``"5-20"`` -> ``(5, 20)``, ``"7"`` -> ``(7, 7)``; empty or None -> None (all layers).

    Parameters
    ----------
    text : str or None
        A layer number or an inclusive range ``first-last`` (``–`` also works).
    """
    if not text or not text.strip():
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[-–:]\s*(\d+)\s*)?", text)
    if not m:
        raise DownloadError(f"layers must look like 5-20 (first-last, inclusive), got {text!r}")
    first = int(m.group(1))
    return first, int(m.group(2)) if m.group(2) else first


@dataclass(frozen=True)
class DownloadStatus:
    """Where a running download stands (the ``result`` of its progress events)."""

    phase: str  # "listing" or "downloading"
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    speed: float  # bytes per second over the last seconds
    eta: float | None  # seconds left, None while unknown
    folders_listed: int = 0
    file: str | None = None  # the file that just finished


@dataclass(frozen=True)
class DownloadResult:
    """What a download did (the ``result`` of its last progress event)."""

    dest: Path
    source: str
    files: tuple[str, ...]  # selected files complete in dest
    downloaded: tuple[str, ...]
    skipped: tuple[str, ...]  # already complete
    failed: dict[str, str]  # path -> reason
    rejected_links: tuple[tuple[str, str], ...]  # (href, reason), never followed
    too_deep: tuple[str, ...]  # folders below max_depth, not listed
    bytes_downloaded: int
    cancelled: bool
    manifest: Path | None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled


class _Job:
    """One download: the session, the thread pool, the selection and what happened."""

    def __init__(self, params: DownloadParams, cancel):
        self.params, self.cancel = params, cancel
        try:
            self.url, creds = find_login(params.url, params.netrc)
        except LoginError as err:
            raise DownloadError(str(err)) from None
        self.secret = creds[1] if creds and creds[1] else None
        self.stop = threading.Event()
        session = make_session(params.workers + 2, auth=host_auth(self.url, creds))  # Requester retries
        self.req = Requester(session, params.retries, params.backoff, params.timeout, self.stopped, self.secret,
                             self._note_retry)  # fmt: skip
        self.dest = Path(params.dest).expanduser()
        self.pool = ThreadPoolExecutor(params.workers, thread_name_prefix="phoenix-download")
        self.meter = ByteMeter()
        self.note = (0.0, "")  # (time, text) of the last retry, shown for a few seconds
        self.crawl = Crawl(self.req, self.pool, self.url, params)
        self.files: dict[str, ListedFile] = {}
        self.failed: dict[str, str] = {}
        self.downloaded: list[str] = []
        self.skipped: list[str] = []

    def stopped(self) -> bool:
        return self.stop.is_set() or (self.cancel is not None and self.cancel.is_set())

    def _note_retry(self, what: str, reason: str, attempt: int) -> None:
        self.note = (time.monotonic(), f"retrying {what} ({reason}, retry {attempt}/{self.params.retries})")

    # ---- listing ---------------------------------------------------------------------

    def discover(self) -> Iterator[Progress]:
        """Read the folder tree (:class:`.http_crawl.Crawl`), yielding what was found so far."""
        crawl = self.crawl
        for _ in crawl.run():
            st = DownloadStatus("listing", 0, len(crawl.files), 0, 0, 0.0, None, crawl.listed)
            note = f"; {self.note[1]}" if time.monotonic() - self.note[0] < 5.0 else ""
            yield Progress(0, 0, f"listing: {crawl.listed} folders read, {len(crawl.files)} files found{note}", st)
        self.url, self.files = crawl.url, crawl.files
        self.failed.update(crawl.failed)

    # ---- one file --------------------------------------------------------------------

    def fetch(self, f: ListedFile) -> str:
        """Download one file (resuming its ``.partial``); ``"downloaded"``, ``"skipped"`` or ``"stopped"``."""
        return fetch_file(self.req, f.url, inside(self.dest, f.rel), f.size, f.rel, self.params.block_size,
                          self.meter.add)  # fmt: skip

    # ---- the whole job ---------------------------------------------------------------

    def status(self, files_done: int, total: int, bytes_total: int, file: str | None = None) -> DownloadStatus:
        speed = self.meter.speed()
        left = max(0, bytes_total - self.meter.done)
        eta = left / speed if speed > 0 else (0.0 if not left else None)
        return DownloadStatus("downloading", files_done, total, self.meter.done, bytes_total, speed, eta, file=file)

    def message(self, st: DownloadStatus) -> str:
        text = (f"{st.files_done}/{st.files_total} files, {human_bytes(st.bytes_done)} of "
                f"{human_bytes(st.bytes_total)}, {human_bytes(st.speed)}/s")  # fmt: skip
        if st.eta is not None:
            text += f", {int(st.eta) // 60}:{int(st.eta) % 60:02d} left"
        return text + (f"; {self.note[1]}" if time.monotonic() - self.note[0] < 5.0 else "")

    def transfer(self) -> Iterator[Progress]:
        files = sorted(self.files.values(), key=lambda f: f.rel)
        total, bytes_total = len(files), sum(f.size or 0 for f in files)
        for f in files:  # bytes already here: complete files and .partial pieces
            final = self.dest / f.rel
            part = final.with_name(final.name + PARTIAL)
            here = f.size if f.size is not None and file_size(final) == f.size else (file_size(part) or 0)
            self.meter.add(min(here, f.size) if f.size is not None else here)
        self.meter.speed()
        futures = {self.pool.submit(self.fetch, f): f for f in files}
        done = 0
        while futures:
            finished, _ = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
            last = None
            for fut in finished:
                f = futures.pop(fut)
                try:
                    outcome = fut.result()
                except DownloadError as err:
                    outcome = "stopped" if self.stopped() else "failed"
                    if outcome == "failed":
                        self.failed[f.rel] = scrub(str(err), self.secret)
                except OSError as err:
                    if err.errno == errno.ENOSPC:
                        self.stop.set()
                        raise DownloadError(f"the disk is full while writing {self.dest / f.rel}: free some space "
                                            "and run the download again (it resumes)") from None  # fmt: skip
                    outcome = "failed"
                    self.failed[f.rel] = f"{f.rel}: cannot write it: {err.strerror or err}"
                if outcome in ("downloaded", "skipped"):
                    (self.downloaded if outcome == "downloaded" else self.skipped).append(f.rel)
                    done, last = done + 1, f.rel
            if self.cancel is not None and self.cancel.is_set():
                self.stop.set()
            st = self.status(done, total, bytes_total, last)
            yield Progress(done, total, self.message(st), st)

    def result(self, cancelled: bool, manifest: Path | None) -> DownloadResult:
        complete = tuple(sorted({*self.downloaded, *self.skipped}))
        return DownloadResult(self.dest, public_url(self.url), complete, tuple(sorted(self.downloaded)),
                              tuple(sorted(self.skipped)), dict(sorted(self.failed.items())), tuple(self.crawl.rejected),
                              tuple(sorted(self.crawl.too_deep)), max(0, self.meter.done), cancelled, manifest)  # fmt: skip

    def write_manifest(self, cancelled: bool) -> Path:
        path = self.dest / MANIFEST
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        files = old.get("files", {}) if old.get("source") == public_url(self.url) else {}
        for rel in (*self.downloaded, *self.skipped):
            size = file_size(self.dest / rel)
            if size is not None:
                files[rel] = {"size": size}
        params = {**dataclasses.asdict(self.params), "url": public_url(self.params.url)}
        manifest = {
            "source": public_url(self.url), "params": params, "files": dict(sorted(files.items())),
            "failed": dict(sorted(self.failed.items())), "complete": not self.failed and not cancelled,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "version": __version__,
        }  # fmt: skip
        with atomic_path(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        return path


def iter_download(params: DownloadParams, cancel=None) -> Iterator[Progress]:
    """Mirror ``params.url`` into ``params.dest``, yielding :class:`Progress` events.

    Parameters
    ----------
    params : DownloadParams
        What to download and how.
    cancel : threading.Event, optional
        Set it to stop within one read block; ``.partial`` files are kept and
        a later run resumes them.

    Yields
    ------
    Progress
        While listing, ``done`` / ``total`` are 0 and ``result`` a
        :class:`DownloadStatus`; while downloading, files done / total and a
        :class:`DownloadStatus` (bytes, speed, time left); the last event's
        ``result`` is the :class:`DownloadResult`.

    Raises
    ------
    DownloadError
        The start URL cannot be listed (bad URL, 404, login refused), the
        selection is too large, the disk is full, or, at the end, some files
        failed (named in the message; the others are downloaded, and the
        error's ``result`` holds the :class:`DownloadResult`).
    """
    job = _Job(params, cancel)
    started = False
    try:
        yield from job.discover()
        if job.stopped():
            yield Progress(0, 0, "cancelled while listing", job.result(True, None))
            return
        try:
            job.dest.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DownloadError(f"cannot create the destination folder {job.dest} ({err.strerror or err}); "
                                "choose another one") from None  # fmt: skip
        started = True
        yield from job.transfer()
        cancelled = job.stopped()
        started = False
        res = job.result(cancelled, job.write_manifest(cancelled))
        n = len(job.files)
        if cancelled:
            msg = f"cancelled: {len(res.files)} of {n} files complete; run again to resume the rest"
        else:
            msg = (f"{len(res.downloaded)} files downloaded ({human_bytes(res.bytes_downloaded)}), "
                   f"{len(res.skipped)} already complete, {len(res.failed)} failed")  # fmt: skip
        yield Progress(len(res.files), n, msg, res)
        if res.failed and not cancelled:
            names = "; ".join(list(res.failed.values())[:8]) + ("; …" if len(res.failed) > 8 else "")
            tried = len({*job.files, *res.failed})
            raise DownloadError(
                f"{len(res.failed)} of {tried} files failed: {names}. "
                f"The other files are in {job.dest}; run the same download again to retry the failed ones", res)
    finally:
        job.stop.set()
        job.pool.shutdown(wait=True, cancel_futures=True)
        if started:  # interrupted (Ctrl-C, closed): record what is complete
            job.write_manifest(True)
        job.req.session.close()


def download(params: DownloadParams | str, dest: str | os.PathLike | None = None, cancel=None,
             **overrides) -> DownloadResult:  # fmt: skip
    """Mirror a folder of an HTTP file server (drains :func:`iter_download`).

    Parameters
    ----------
    params : DownloadParams or str
        The parameters, or the URL.
    dest : path-like, optional
        The destination folder (when ``params`` is a URL).
    cancel : threading.Event, optional
        Set it to stop the download; ``.partial`` files resume later.
    **overrides
        :class:`DownloadParams` fields to set or change (``layers=(5, 20)``,
        ``include=("*.tif",)``, ``workers=8``...).

    Returns
    -------
    DownloadResult
        Files complete in ``dest``, downloaded, already complete, links refused.

    Raises
    ------
    DownloadError
        See :func:`iter_download`.
    """
    if not isinstance(params, DownloadParams):
        if dest is None:
            raise DownloadError("download(url, dest): say where the files go (dest)")
        params = DownloadParams(url=str(params), dest=str(dest), **overrides)
    elif overrides or dest is not None:
        params = DownloadParams(**{**dataclasses.asdict(params), **overrides, **({"dest": str(dest)} if dest else {})})
    result = None
    for ev in iter_download(params, cancel):
        result = ev.result
    return result
