"""Read a folder tree of an HTTP file server: the files selected, with their sizes.

Index pages are read in parallel (a thread pool), links are resolved and
checked by :mod:`.http_index`, and every link without a trailing slash is
probed (HEAD) for its size, which also tells a folder linked without its
``/`` (a redirect to ``name/`` or an HTML answer). Folders deeper than the
depth cap are not read; a tree with more selected files than the cap is
refused before anything is downloaded.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any

from .http_fetch import Requester, fetch_listing, probe
from .http_index import DownloadError, Link, check_rel, links_of
from .http_session import public_url, scrub


@dataclass(frozen=True)
class ListedFile:
    """A file to download: its URL, its path below the start folder, its size (None: unknown)."""

    url: str
    rel: str
    size: int | None


@dataclass
class Crawl:
    """The listing of the tree below ``url``, filled in by :meth:`run`.

    ``select`` is a :class:`~napari_phoenix.core.download.DownloadParams`
    (its ``wants``, ``excluded``, ``subfolder``, ``max_depth``, ``max_files``
    and ``allow_hosts``).
    """

    req: Requester
    pool: Executor
    url: str
    select: Any
    files: dict[str, ListedFile] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason (folders end in /)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (href, reason)
    too_deep: list[str] = field(default_factory=list)
    listed: int = 0

    def start(self) -> Link | None:
        """The folder to read first (the URL, or its sub-folder); a URL of one file becomes the selection."""
        url = self.url
        if not urllib.parse.urlsplit(url).path.endswith("/"):
            is_dir, size = probe(self.req, url, public_url(url))
            if not is_dir:
                name = check_rel(urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1])
                self.files[name] = ListedFile(url, name, size)
                return None
            url += "/"
        self.url = url
        sub = self.select.subfolder
        if sub:
            return Link(urllib.parse.urljoin(url, urllib.parse.quote(sub) + "/"), sub, True)
        return Link(url, "", True)

    def run(self) -> Iterator[None]:
        """Read the tree; yield after each batch of answers (stops early when the job stops).

        Raises
        ------
        DownloadError
            The start folder cannot be read, or more files than ``max_files`` are selected.
        """
        p = self.select
        start = self.start()
        if start is None:
            return
        pending: dict[Future, tuple[str, Link]] = {}

        def add_folder(link: Link) -> None:
            if link.rel and p.excluded(link.rel):
                return
            if (len(link.rel.split("/")) if link.rel else 0) > p.max_depth:
                self.too_deep.append(link.rel)
                return
            what = f"{link.rel}/" if link.rel else public_url(link.url)
            pending[self.pool.submit(fetch_listing, self.req, link.url, what)] = ("list", link)

        def maybe_folder(rel: str) -> bool:  # no suffix: may be a folder linked without its "/"
            return "." not in rel.rsplit("/", 1)[-1] and not p.excluded(rel)

        add_folder(start)
        while pending:
            finished, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            if self.req.stopped():
                return
            for fut in finished:
                kind, link = pending.pop(fut)
                try:
                    found = fut.result()
                except DownloadError as err:
                    if self.req.stopped():
                        return
                    if link is start:
                        raise DownloadError(scrub(str(err), self.req.secret)) from None
                    self.failed[link.rel + ("/" if kind == "list" else "")] = scrub(str(err), self.req.secret)
                    continue
                if kind == "list":
                    self.listed += 1
                    links, rejected = links_of(found, link.url, link.rel, p.allow_hosts)
                    self.rejected.extend((h, f"in {link.rel or 'the start folder'}: {r}") for h, r in rejected)
                    for child in links:
                        if child.is_dir:
                            add_folder(child)
                        elif p.wants(child.rel) or maybe_folder(child.rel):
                            pending[self.pool.submit(probe, self.req, child.url, child.rel)] = ("probe", child)
                elif found[0]:  # a folder linked without its trailing slash
                    add_folder(Link(link.url + "/", link.rel, True))
                elif p.wants(link.rel):
                    self.files[link.rel] = ListedFile(link.url, link.rel, found[1])
                if len(self.files) > p.max_files:
                    raise DownloadError(
                        f"{public_url(self.url)} holds more than {p.max_files:,} files to download; narrow the "
                        "selection (layers, include / exclude patterns, a sub-folder) or raise max_files")
            yield
