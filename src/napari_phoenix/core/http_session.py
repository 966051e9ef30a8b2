"""HTTP sessions and logins, one set of rules for downloads and remote reading.

The login for an address comes from, in this order: the address itself
(``https://USER:PASSWORD@host/...``), the environment (``PHOENIX_HTTP_USER``
and ``PHOENIX_HTTP_PASSWORD``), a netrc file the caller names, and last
``$NETRC`` or ``~/.netrc``, which requests reads by itself. It is sent as basic
auth to that address's host only (a redirect or a link to another host gets no
password). Messages show addresses without the login (:func:`public_url`) or
with the password masked (:func:`mask_url`). :func:`make_session` builds every
``requests.Session`` of the package: the User-Agent, a connection pool and,
where the caller does not retry by itself, retries with exponential backoff.
See ``docs/data-server.md#logins``.
"""

from __future__ import annotations

import netrc as netrc_module
import os
import re
import urllib.parse

import requests
from requests.adapters import HTTPAdapter, Retry

from .._version import __version__
from .errors import PhoenixError

ENV_USER = "PHOENIX_HTTP_USER"
ENV_PASSWORD = "PHOENIX_HTTP_PASSWORD"
#: what to do when a server asks for a login (401 / 403 messages end with it)
LOGIN_HINT = (
    f"set {ENV_USER} and {ENV_PASSWORD}, add the host to ~/.netrc (a line "
    "`machine HOST login USER password PASSWORD`) or put the login in the address "
    "(https://USER:PASSWORD@HOST/…); see docs/data-server.md#logins"
)
USER_AGENT = f"napari-phoenix/{__version__} (+https://github.com/napari-phoenix)"
#: statuses worth retrying (server overloaded or briefly broken)
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class LoginError(PhoenixError, ValueError):
    """The login for a host cannot be found as configured (half-set environment, bad netrc file)."""


def retryable(status: int) -> bool:
    """True for answers worth retrying: 408, 425, 429, 5xx (not 501 / 505: they will not change)."""
    return status in RETRY_STATUSES or (status >= 500 and status not in (501, 505))


# ---- addresses with a login ---------------------------------------------------------------


def public_url(url: str) -> str:
    """``url`` without any ``user:password@`` part (for manifests, metadata and cache keys)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def mask_url(url: str) -> str:
    """``url`` with its password (if any) as ``***``: ``https://USER:***@host/…`` (messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``(url without credentials, (user, password) or None)`` from ``https://user:pw@host/...``."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    creds = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    return public_url(url), creds


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (a password) replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


# ---- logins ---------------------------------------------------------------------------------


def find_credentials(url: str, netrc_file: str | None = None) -> tuple[str, str] | None:
    """The login for ``url``'s host: ``PHOENIX_HTTP_USER`` / ``_PASSWORD``, else ``netrc_file``.

    Without either, None: requests then reads ``$NETRC`` or ``~/.netrc`` by itself.

    Parameters
    ----------
    url : str
        The address (without credentials).
    netrc_file : str, optional
        A netrc file to read the host's login from.

    Returns
    -------
    tuple of (str, str) or None
        User and password.

    Raises
    ------
    LoginError
        Only one of the two variables is set, or ``netrc_file`` cannot be read
        or has no entry for the host.
    """
    user, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
    if user or password:
        if not (user and password is not None):
            missing = ENV_PASSWORD if user else ENV_USER
            raise LoginError(
                f"{ENV_USER} and {ENV_PASSWORD} go together: set {missing} too, or unset both"
            )
        return user, password
    if netrc_file:
        host = urllib.parse.urlsplit(url).hostname or ""
        try:
            entry = netrc_module.netrc(os.path.expanduser(netrc_file)).authenticators(host)
        except (OSError, netrc_module.NetrcParseError) as err:
            raise LoginError(
                f"cannot read the netrc file {netrc_file}: {err.__class__.__name__}; "
                "check its path and format ('machine HOST login USER password PW')"
            ) from None
        if entry is None:
            raise LoginError(
                f"the netrc file {netrc_file} has no entry for {host}: add "
                f"'machine {host} login USER password PASSWORD'"
            )
        return entry[0], entry[2] or ""
    return None


def find_login(url: str, netrc_file: str | None = None) -> tuple[str, tuple[str, str] | None]:
    """``(url without login, login or None)``: from the address, else :func:`find_credentials`.

    Parameters
    ----------
    url : str
        The address, maybe with ``user:password@``.
    netrc_file : str, optional
        A netrc file to read the host's login from.

    Returns
    -------
    tuple
        The address without the login, and the login (None: requests' own
        ``$NETRC`` / ``~/.netrc`` lookup applies).
    """
    clean, creds = split_credentials(url)
    return clean, creds or find_credentials(clean, netrc_file)


class HostBasicAuth(requests.auth.HTTPBasicAuth):
    """Basic auth sent only to one host (a link or redirect to another host gets no password)."""

    def __init__(self, username: str, password: str, host: str):
        super().__init__(username, password)
        self.host = host

    def __call__(self, r):
        if urllib.parse.urlsplit(r.url).hostname == self.host:
            return super().__call__(r)
        return r

    def __repr__(self) -> str:
        return f"HostBasicAuth(host={self.host!r}, password hidden)"


def host_auth(url: str, credentials: tuple[str, str] | None) -> HostBasicAuth | None:
    """Basic auth with ``credentials`` for ``url``'s host only; None without credentials."""
    if credentials is None:
        return None
    return HostBasicAuth(*credentials, urllib.parse.urlsplit(url).hostname or "")


# ---- sessions -------------------------------------------------------------------------------


def make_session(
    pool_size: int = 8,
    retries: int = 0,
    backoff: float = 0.0,
    auth: requests.auth.AuthBase | None = None,
) -> requests.Session:
    """A requests Session: the User-Agent, a connection pool, retries, a login.

    Parameters
    ----------
    pool_size : int
        Connections kept per host (one per thread that shares the session).
    retries : int
        Retries of a GET / HEAD after a connection error, a broken answer or
        a :data:`RETRY_STATUSES` status (the last answer is returned, not
        raised); 0 when the caller retries by itself.
    backoff : float
        Seconds before the second retry, doubled at each next one (urllib3's
        ``backoff_factor``; the first retry is at once).
    auth : requests.auth.AuthBase, optional
        The session's login (e.g. :class:`HostBasicAuth`).

    Returns
    -------
    requests.Session
        Ready to use; close it when done.
    """
    max_retries = 0
    if retries:
        max_retries = Retry(
            total=retries,
            backoff_factor=backoff,
            status_forcelist=sorted(RETRY_STATUSES),
            allowed_methods=("GET", "HEAD"),
            raise_on_status=False,
        )
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=4, pool_maxsize=max(4, pool_size), max_retries=max_retries
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.auth = auth
    return session


# ---- answers and failures ---------------------------------------------------------------------


def describe(err: BaseException, secret: str | None = None) -> str:
    """A short, credential-free description of a requests / OS error.

    Parameters
    ----------
    err : BaseException
        The error.
    secret : str, optional
        A password to mask if the text holds it.

    Returns
    -------
    str
        ``"timed out"``, ``"connection dropped midway"``, ``"connection failed
        ([Errno 111] Connection refused)"``, or the error's own text.
    """
    if isinstance(err, requests.Timeout):
        text = "timed out"
    elif isinstance(err, requests.exceptions.ChunkedEncodingError):
        text = "connection dropped midway"
    elif isinstance(err, requests.ConnectionError):
        inner = err.args[0] if err.args else err
        reason = str(getattr(inner, "reason", inner))
        m = re.search(r"\[Errno [^\]]*\][^'\")]*", reason)  # e.g. "[Errno 111] Connection refused"
        reason = m.group(0).strip() if m else re.sub(r"//[^/@\s]*@", "//", reason)[-160:]
        text = f"connection failed ({reason})" if reason else "connection failed"
    else:
        text = str(err) or err.__class__.__name__
    return scrub(text, secret)


def content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``"bytes 100-199/1000"`` -> ``(100, 200, 1000)``; ``"bytes */10"`` -> ``(None, None, 10)``.

    Parameters
    ----------
    value : str or None
        A ``Content-Range`` header.

    Returns
    -------
    tuple
        First byte, end (exclusive) and total size; None where the header
        does not say (all three for a missing or malformed header).
    """
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    first, last, total = m.groups()
    return (
        int(first) if first else None,
        int(last) + 1 if last else None,
        int(total) if total != "*" else None,
    )
