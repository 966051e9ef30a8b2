"""Pillow's decompression-bomb limit, lifted deliberately for scroll images only.

Real masks and layers are 10,000 x 14,000 px and larger (up to ~1.4 gigapixels),
far over Pillow's default limit. The limit is raised only while our own reads
run (counted, so that concurrent reads do not restore it early) and put back
afterwards, so other code in the same process keeps Pillow's protection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from PIL import Image

#: Largest image read, in pixels (scroll segments reach ~1.4 gigapixels).
MAX_MASK_PIXELS = 2**33

_limit_lock = threading.Lock()
_limit_users = 0
_saved_limit: int | None = None


@contextlib.contextmanager
def large_images_allowed() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit to ``MAX_MASK_PIXELS`` while the block runs."""
    global _limit_users, _saved_limit
    with _limit_lock:
        if _limit_users == 0:
            _saved_limit = Image.MAX_IMAGE_PIXELS
            if _saved_limit is not None and _saved_limit < MAX_MASK_PIXELS:
                Image.MAX_IMAGE_PIXELS = MAX_MASK_PIXELS
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit
