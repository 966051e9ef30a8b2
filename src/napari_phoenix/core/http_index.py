"""HTTP directory listings, read safely: the files and folders below a folder URL.

The public scroll data server (``https://dl.ash2txt.org/...``) serves
Apache-style index pages: one ``<a href>`` per file or folder, folders ending
in ``/``, plus parent, sort (``?C=N;O=D``) and other navigation links. This
module turns such a page into the entries *below* the listed folder, each
with the relative path it will have on disk, and refuses every link that
could write outside the destination: ``..`` segments (also percent-encoded),
backslashes, absolute paths outside the folder, other hosts (unless allowed),
credentials in links. Remote reading lists folders with the same parser
(:func:`links_of`). No network access here (see :mod:`.http_fetch`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from .errors import PhoenixError

_RESERVED = (".partial", ".phoenix-download.json")
#: an index page larger than this is not a folder listing
MAX_LISTING_BYTES = 32 * 2**20
_BAD_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")


class DownloadError(PhoenixError, ValueError):
    """A download cannot be done as asked (bad URL, login refused, files that failed)."""

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        #: the :class:`~napari_phoenix.core.download.DownloadResult` so far, when there is one
        self.result = result


class UnsafeLink(DownloadError):
    """A link of a listing that would leave the folder being mirrored."""


@dataclass(frozen=True)
class Link:
    """An entry of a listing: its URL, its path below the start folder, folder or not (None: unknown)."""

    url: str
    rel: str
    is_dir: bool | None


# ---- listings ----------------------------------------------------------------------------


class _LinkParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag.lower() == "a":
            for name, value in attrs:
                if name.lower() == "href" and value is not None:
                    self.hrefs.append(value)


def parse_hrefs(html: str) -> list[str]:
    """The ``href`` of every ``<a>`` of a page, in order, each once (entities decoded).

    Parameters
    ----------
    html : str
        An index page.

    Returns
    -------
    list of str
        Raw link targets, not yet resolved or checked.
    """
    parser = _LinkParser()
    parser.feed(html)
    parser.close()
    return list(dict.fromkeys(h.strip() for h in parser.hrefs if h.strip()))


def _host_key(parts: urllib.parse.SplitResult) -> tuple[str, int | None]:
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.hostname or "", parts.port or default)


def check_rel(rel: str) -> str:
    """``rel`` if it is a safe relative path (no ``..``, ``.``, empty or absolute parts), else raise.

    Parameters
    ----------
    rel : str
        A decoded, ``/``-separated relative path.

    Returns
    -------
    str
        The same path.
    """
    if not rel or rel.startswith("/") or _BAD_CHARS.search(rel):
        raise UnsafeLink(f"unsafe path {rel!r} (absolute, empty, backslash or control character)")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or re.match(r"^[A-Za-z]:", parts[0]):
        raise UnsafeLink(f"unsafe path {rel!r} ('..', '.', empty or drive part)")
    if any(len(p.encode()) > 255 for p in parts) or parts[-1].endswith(_RESERVED):
        raise UnsafeLink(f"unusable file name in {rel!r} (too long, or a name napari-phoenix keeps for itself)")
    return rel


def resolve_link(dir_url: str, dir_rel: str, href: str, allow_hosts=()) -> Link | None:
    """The entry a link of the listing at ``dir_url`` points to, or None for navigation links.

    Parameters
    ----------
    dir_url : str
        URL of the listed folder (ending in ``/``).
    dir_rel : str
        Its path below the start folder (``""`` for the start folder).
    href : str
        The raw link target.
    allow_hosts : sequence of str
        Other host names whose links are followed.

    Returns
    -------
    Link or None
        None for parent, self, sort, anchor and non-HTTP (``mailto:``) links.

    Raises
    ------
    UnsafeLink
        A link leaving the folder: another host, a path outside it, ``..``
        (also as ``%2e%2e``), a backslash, credentials.
    """
    if href.startswith(("?", "#")):
        return None
    scheme = urllib.parse.urlsplit(href).scheme.lower()
    if scheme and scheme not in ("http", "https"):
        return None  # mailto:, javascript:, ftp:, data:
    target = urllib.parse.urlsplit(urllib.parse.urljoin(dir_url, href))
    if target.query or target.fragment:
        return None
    base = urllib.parse.urlsplit(dir_url)
    if target.username is not None:
        raise UnsafeLink(f"link {href!r} carries credentials")
    if _host_key(target) != _host_key(base) and target.hostname not in set(allow_hosts):
        raise UnsafeLink(f"link {href!r} goes to another host ({target.hostname}); allow it with allow_hosts")
    path, here = urllib.parse.unquote(target.path), urllib.parse.unquote(base.path)
    if _BAD_CHARS.search(path):
        raise UnsafeLink(f"link {href!r} holds a backslash or control character")
    if here.startswith(path) or here.rstrip("/") == path:
        return None  # the folder itself, its parent or the site root
    if not path.startswith(here):
        raise UnsafeLink(f"link {href!r} points outside the folder being listed")
    is_dir = path.endswith("/")
    rel = path[len(here):].rstrip("/") if is_dir else path[len(here):]
    rel = check_rel(f"{dir_rel}/{rel}" if dir_rel else rel)
    return Link(urllib.parse.urlunsplit(target), rel, True if is_dir else None)


def links_of(html: str, dir_url: str, dir_rel: str, allow_hosts=()) -> tuple[list[Link], list[tuple[str, str]]]:
    """The entries of an index page and the links refused, with the reason.

    Parameters
    ----------
    html : str
        The page.
    dir_url : str
        URL of the listed folder (ending in ``/``).
    dir_rel : str
        Its path below the start folder.
    allow_hosts : sequence of str
        Other hosts whose links are followed.

    Returns
    -------
    links : list of Link
        Each entry once, in page order.
    rejected : list of (str, str)
        ``(href, reason)`` of links that would leave the folder.
    """
    links, rejected, seen = [], [], set()
    for href in parse_hrefs(html):
        try:
            link = resolve_link(dir_url, dir_rel, href, allow_hosts)
        except UnsafeLink as err:
            rejected.append((href, str(err)))
            continue
        if link is not None and link.rel not in seen:
            seen.add(link.rel)
            links.append(link)
    return links, rejected


def child_names(html: str, dir_url: str) -> list[str]:
    """The names of the entries directly in the listed folder, sub-folders ending in ``/``.

    Parameters
    ----------
    html : str
        The index page.
    dir_url : str
        URL of the listed folder, ending in ``/`` and without a login.

    Returns
    -------
    list of str
        Decoded names in page order; links deeper down, outside the folder or
        to other hosts are left out.
    """
    links, _ = links_of(html, dir_url, "")
    return [link.rel + ("/" if link.is_dir else "") for link in links if "/" not in link.rel]


def inside(root: Path, rel: str) -> Path:
    """``root / rel``, checked (after resolving links) to stay inside ``root``."""
    path = root / check_rel(rel)
    real, top = path.resolve(), root.resolve()
    if real != top and top not in real.parents:
        raise UnsafeLink(f"{rel} would be written outside {root} (through a link in the destination)")
    return path
