"""A scripted napari session: open a segment, edit its ink label, save with history.

Run with a display to look at the result, or headless::

    .venv/bin/python examples/scripted_session.py --out /tmp/phoenix-example --headless

It makes the phantom segment, opens it lazily in napari with the Phoenix
reader, paints a stroke of ink (as a user would with the brush), saves
``label.png`` through the Phoenix writer (the previous file goes to
``.history/``) and checks that reading the file back gives the painted mask.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import napari_phoenix as nx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="phoenix-example", help="folder for the sample segment")
    parser.add_argument("--headless", action="store_true", help="do not start the napari event loop")
    args = parser.parse_args()

    import napari

    from napari_phoenix._napari.viewer import show_segment

    segment = nx.make_phantom(Path(args.out) / "segment", height=768, width=1024, seed=3)
    viewer = show_segment(segment, napari.Viewer(show=not args.headless))
    ink = viewer.layers["segment label"]
    before = ink.data.astype(bool).copy()

    # a stroke of ink across the middle, painted like a brush drag
    ink.brush_size = 12
    with ink.block_history():
        for x in range(200, 800, 4):
            ink.paint((384, x), 1, refresh=False)
    ink.refresh()

    written = ink.save(str(segment / "label.png"), plugin="napari-phoenix")
    saved = nx.read_mask(segment / "label.png")
    assert np.array_equal(saved, ink.data.astype(bool))
    kept = sorted((segment / ".history").glob("label-*.png"))
    assert np.array_equal(nx.read_mask(kept[-1]), before)
    print(f"painted {int(saved.sum() - before.sum())} px of ink; saved {written}; previous kept as {kept[-1]}")

    if not args.headless:
        napari.run()
    else:
        viewer.close()


if __name__ == "__main__":
    main()
