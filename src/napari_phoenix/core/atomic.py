"""Atomic file writes: write to a temporary name beside the target, then rename.

A reader never sees a half-written file under the final name: either the old
file or the complete new one is there, also when the process is killed or the
disk fills up mid-write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    Parameters
    ----------
    target : path-like
        The final file name.
    suffix : str, optional
        Suffix of the temporary file (defaults to the target's, so that
        libraries choosing a format by extension still work).

    Yields
    ------
    Path
        Where to write. On an exception the temporary file is removed and the
        target is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files; give the result the usual permissions (0666 less umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
