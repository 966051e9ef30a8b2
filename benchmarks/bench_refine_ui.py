"""Benchmark: the "Refine labels" widget on full-size 10,000 x 14,000 ink / ignore layers.

Starts a real napari viewer (under a virtual X server when there is no display),
docks the widget over a synthetic float32 prediction and uint8 ink and ignore
Labels layers of 10,000 x 14,000 px, and times what a user does, each action
including the canvas update (``QApplication.processEvents()``), side by side with
the naive way of doing the same thing where there is one:

* a brush stroke (one ``labels.paint`` per mouse event) with *Show ink under
  ignore* on: the overlap layer updated in the stroke's box vs recomputed whole;
* *Erase ignore where ink is painted* vs ``ignore[ink != 0] = 0; refresh()``;
* *Show ink under ignore* switched on;
* the proposal threshold slider: the thresholded preview, and the cleaned
  proposal (specks, holes) from the background job, with the longest stall of
  the GUI thread while it runs;
* *Compare* of two rounds and of two predictions (background job, then the
  difference layer and table) vs the whole-array implementation it replaced;
* a swipe-line move (Labels and Image swipe) vs recompositing the whole array,
  and vs shifted views of A and B; a blink step.

Writes the table between the ``bench_refine_ui`` markers of ``docs/benchmarks.md``.
Run (about 2-3 minutes on 2 cores)::

    xvfb-run -a .venv/bin/python benchmarks/bench_refine_ui.py
    .venv/bin/python benchmarks/bench_refine_ui.py --height 2000 --width 3000   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from bench_label_editing import machine, start_display  # noqa: E402  (sibling scripts)
from bench_open_stack import update_section  # noqa: E402

INTERACTIVE_MS = 100


def make_data(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth float32 prediction with ~10 % ink, the ink at 0.5 and the ignore in the 0.45-0.55 band."""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.random((h // 24 + 2, w // 24 + 2)).astype(np.float32)
    prob = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    np.clip((prob - 0.35) * 1.6, 0, 1, out=prob)
    prob += rng.normal(0, 0.03, (h, w)).astype(np.float32)
    np.clip(prob, 0, 1, out=prob)
    ink = (prob >= 0.5).view(np.uint8)
    ignore = ((prob > 0.45) & (prob < 0.55)).view(np.uint8)
    return prob, ink, ignore


def naive_compare_rounds(la, ia, lb, ib):
    """The whole-array compare_rounds that napari-phoenix had before (for the ratio)."""
    diff = np.zeros(la.shape, np.uint8)
    diff[ib & ~ia] = 3
    diff[ia & ~ib] = 4
    diff[lb & ~la] = 1
    diff[la & ~lb] = 2
    inter, union = int((la & lb).sum()), int((la | lb).sum())
    stats = {"ink_added": int((lb & ~la).sum()), "ink_removed": int((la & ~lb).sum()),
             "ignore_added": int((ib & ~ia).sum()), "ignore_removed": int((ia & ~ib).sum()),
             "ink_iou": inter / union if union else 1.0}  # fmt: skip
    return diff, stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=10_000)
    p.add_argument("--width", type=int, default=14_000)
    p.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args()
    display = start_display()
    try:
        body = run(args)
    finally:
        if display is not None:
            display.stop() if hasattr(display, "stop") else display.terminate()
    print(body, flush=True)
    if not args.no_docs:
        update_section("bench_refine_ui", body)
    os._exit(0)  # skip Qt's teardown of a viewer holding ~2 GB of layers


def run(args) -> str:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_phoenix._napari import compare_panel as cp
    from napari_phoenix._napari.refine_tools import overlap
    from napari_phoenix.core.compare import compare_masks

    t_start = time.perf_counter()
    h, w = args.height, args.width
    prob, ink_data, ignore_data = make_data(h, w)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.add_image(prob, name="seg prediction", contrast_limits=(0, 1),
                     metadata={"phoenix": {"role": "prediction composite", "source_layer": "seg"}})  # fmt: skip
    ink = viewer.add_labels(ink_data, name="seg label", metadata={"phoenix": {"role": "label"}})
    ignore = viewer.add_labels(ignore_data, name="seg ignore", opacity=0.5, metadata={"phoenix": {"role": "ignore"}})
    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Refine labels")
    paint = widget.paint
    canvas = viewer.window._qt_viewer.canvas
    for _ in range(5):
        app.processEvents()
    res: dict[str, list[float]] = {}
    notes: dict[str, str] = {}

    def timed(name: str, fn, n: int = 1) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            app.processEvents()
            res.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)

    def wait_jobs() -> float:
        """Run the event loop until the widget's jobs end; returns the longest GUI stall (ms)."""
        worst, last = 0.0, time.perf_counter()
        while widget.busy:
            app.processEvents()
            now = time.perf_counter()
            worst, last = max(worst, (now - last) * 1e3), now
            time.sleep(0.005)
            last = time.perf_counter()
        app.processEvents()
        return worst

    rng = np.random.default_rng(1)

    def stroke(n: int, after=None) -> list:
        y0, x0 = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 10, w // 2))
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            ink.paint((y0 + 200 * np.sin(i / 6), x0 + 8 * i), 1)
            if after is not None:
                after()
            app.processEvents()
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    # ---- ink under ignore: on, then strokes (incremental) vs the whole layer per dab
    timed("Show ink under ignore: switch on (whole layer)", lambda: paint.overlap_check.setChecked(True))
    ink.brush_size = 15
    ink.mode = "paint"
    for _ in range(3):
        res.setdefault("brush stroke with ink under ignore shown (per dab)", []).extend(stroke(40))
    while widget.busy:
        app.processEvents()
    assert np.array_equal(viewer.layers["ink under ignore"].data, ink.data & ignore.data)
    layer = viewer.layers["ink under ignore"]
    naive_overlap = lambda: (overlap(ink.data, ignore.data, layer.data), layer.refresh())  # noqa: E731
    res["naive: same stroke, overlap recomputed whole (per dab)"] = stroke(8, naive_overlap)
    notes["brush stroke with ink under ignore shown (per dab)"] = "naive: same stroke, overlap recomputed whole (per dab)"
    paint.overlap_check.setChecked(False)

    # ---- erase ignore where ink is painted (one undo step) vs plain numpy
    ignore_before = ignore.data.copy()
    for _ in range(3):
        timed("Erase ignore where ink is painted (+ undo record)", lambda: paint.erase("ignore", "ink"))
        ignore.undo()
        app.processEvents()
    assert np.array_equal(ignore.data, ignore_before)

    def naive_erase():
        ignore.data[ink.data != 0] = 0
        ignore.refresh()

    timed("naive: ignore[ink != 0] = 0; refresh() (no undo)", naive_erase, n=2)
    notes["Erase ignore where ink is painted (+ undo record)"] = "naive: ignore[ink != 0] = 0; refresh() (no undo)"
    ignore.data = ignore_before

    # ---- threshold slider: preview at once, the cleaned proposal from the job
    widget.propose("ink")
    stall = wait_jobs()
    for v in (450, 470, 490, 510, 530):
        timed("threshold slider step: thresholded preview shown", lambda v=v: widget.threshold_slider.setValue(v))
        t0 = time.perf_counter()
        stall = max(stall, wait_jobs())
        res.setdefault("cleaned proposal (background job, after the preview)", []).append(
            (time.perf_counter() - t0) * 1e3)
        if len(res["cleaned proposal (background job, after the preview)"]) >= 2:
            break
    from napari_phoenix.core.refine import propose_ink

    timed("naive: propose_ink on the GUI thread (no preview)", lambda: propose_ink(prob, 0.5))
    notes["threshold slider step: thresholded preview shown"] = "naive: propose_ink on the GUI thread (no preview)"
    notes["cleaned proposal (background job, after the preview)"] = f"longest GUI stall meanwhile {stall:,.0f} ms"

    # ---- compare two rounds (job + layer) vs the old whole-array code
    label_a, ignore_a = (prob >= 0.55), (prob > 0.5) & (prob < 0.6)
    label_b, ignore_b = ink.data != 0, ignore.data != 0
    timed("compare two rounds: compare_masks (job)", lambda: compare_masks(label_a, ignore_a, label_b, ignore_b), n=2)
    timed("naive: whole-array compare (4 masked writes, 6 sums)",
          lambda: naive_compare_rounds(label_a, ignore_a, label_b, ignore_b))  # fmt: skip
    notes["compare two rounds: compare_masks (job)"] = "naive: whole-array compare (4 masked writes, 6 sums)"
    panel = widget.compare
    diff, stats = compare_masks(label_a, ignore_a, label_b, ignore_b)
    masks = [(label_a, ignore_a), (label_b, ignore_b)]
    timed("compare: difference layer + table shown", lambda: panel._compared(cp.ROUNDS, "round 1", cp.CURRENT,
                                                                             masks, diff, stats))  # fmt: skip

    # ---- blink and swipe (rounds: Labels)
    panel.flip()  # the first step adds the round's layers: a one-off
    timed("blink step (A ⇄ B)", panel.flip, n=6)
    timed("full canvas repaint, these layers (the floor of a blink step)", canvas.native.repaint, n=3)
    notes["blink step (A ⇄ B)"] = "full canvas repaint, these layers (the floor of a blink step)"
    panel.stop()
    timed("swipe on (Labels composite built)", lambda: panel.swipe_button.setChecked(True))
    cols = np.linspace(w * 0.3, w * 0.7, 21).astype(int)
    for c in cols:
        timed("swipe line move, Labels (pyramid)", lambda c=c: panel.swipe_slider.setValue(int(c)))
    swipe = viewer.layers[f"swipe: round 1 | {cp.CURRENT}"]
    panel.swipe_button.setChecked(False)
    a_disp = (swipe.data[0] if swipe.multiscale else swipe.data).copy()  # the naive way: one full-size layer, recomposited whole on every move
    naive_layer = viewer.add_labels(a_disp.copy(), name="naive swipe")
    colgrid = np.arange(w)[None, :]

    def naive_swipe(c):
        np.copyto(naive_layer.data, np.where(colgrid < c, a_disp, ink.data))
        naive_layer.refresh()

    for c in cols[:4]:
        timed("naive: recomposite whole + full refresh, Labels", lambda c=c: naive_swipe(c))
    viewer.layers.remove(naive_layer)
    notes["swipe line move, Labels (pyramid)"] = "naive: recomposite whole + full refresh, Labels"

    # ---- compare two predictions, swipe images
    prob_b = np.clip(prob + 0.1 * np.sin(np.arange(w, dtype=np.float32) / 500)[None, :], 0, 1)
    viewer.add_image(prob_b, name="seg prediction 2", contrast_limits=(0, 1))
    panel.pick(cp.PREDICTIONS, "seg prediction", "seg prediction 2")
    for _ in range(2):
        t0 = time.perf_counter()
        panel.compare()
        s = wait_jobs()
        res.setdefault("compare two predictions (job + layers + table)", []).append((time.perf_counter() - t0) * 1e3)
    notes["compare two predictions (job + layers + table)"] = f"longest GUI stall meanwhile {s:,.0f} ms"
    timed("swipe on (Image composite built)", lambda: panel.swipe_button.setChecked(True))
    for c in cols:
        timed("swipe line move, Image uint8 (pyramid)", lambda c=c: panel.swipe_slider.setValue(int(c)))
    panel.swipe_button.setChecked(False)
    b_layer = viewer.layers["seg prediction 2"]

    def views_swipe(c):  # B's layer shows only B[:, c:] (a view, shifted): no copy in our code
        b_layer.data = prob_b[:, c:]
        b_layer.translate = (0, c)

    for c in cols[:3]:
        timed("naive: shifted views of B, float32 (napari copies + uploads)", lambda c=c: views_swipe(int(c)))
    notes["swipe line move, Image uint8 (pyramid)"] = "naive: shifted views of B, float32 (napari copies + uploads)"
    total = time.perf_counter() - t_start
    viewer.close()
    return report(args, res, notes, total)


def _verdict(name: str, ms: list[float]) -> str:
    med = statistics.median(ms)
    if name.startswith(("naive", "full canvas")):
        return "(reference)"
    if "job" in name:
        return "background job (the GUI stays usable)"
    if "switch on" in name or "built" in name or "shown" in name and "compare" in name:
        return "one-off" + (" (< 100 ms)" if med < INTERACTIVE_MS else "")
    return "responsive" if med < INTERACTIVE_MS else "**slow**"


def report(args, res: dict, notes: dict, total: float) -> str:
    med = {k: statistics.median(v) for k, v in res.items()}
    rows = ["| action | n | median (ms) | max (ms) | vs naive (or reference) | verdict (target < 100 ms) |",
            "|---|---:|---:|---:|---:|---|"]
    for name, ms in res.items():
        ref = notes.get(name, "")
        ratio = (f"{med[ref] / med[name]:,.1f}x faster" if med[ref] >= med[name] else
                 f"{med[name] / med[ref]:,.1f}x slower") if ref in med else ref  # fmt: skip
        rows.append(f"| {name} | {len(ms)} | {med[name]:,.1f} | {max(ms):,.1f} | {ratio} | {_verdict(name, ms)} |")
    mb = args.height * args.width / 1e6
    return f"""## Refine labels widget on a full-size segment (`bench_refine_ui.py`)

Machine: {machine()}.
Data: a {args.height:,} x {args.width:,} px (rows x columns) float32 prediction and uint8
ink and ignore Labels layers of the same shape ({mb:,.0f} MB each), the "Refine labels"
widget docked, viewed zoomed to fit. Each time runs from the call to the end of
`QApplication.processEvents()` (canvas update included). "vs naive" compares with the
naive way of doing the same, measured in the same run (median / median); a blink step is
compared with a bare canvas repaint of the same layers, its floor without a GPU.

{chr(10).join(rows)}

How it stays responsive:

- **Ink under ignore** follows a stroke in the stroke's bounding box only (napari's
  paint event gives it) and uploads only that box of the overlap layer's texture
  (napari's partial Labels update); the whole layer is recomputed only for new data.
- **Threshold slider**: `prediction >= threshold` is written into the proposal layer at
  once (band by band, no new array); removing specks and filling holes (two connected-
  component labellings of the whole map) runs in the background job and replaces it.
- **Compare** works in bands of 1,024 rows with uint8 arithmetic on 0/1 masks and
  `count_nonzero` (no fancy indexing), in the background job.
- **Swipe** keeps one composite, a pyramid shown as a multiscale layer: a move copies
  only the columns the line passed over (at every level) and napari then reads and
  uploads only what is in view, at the level that fits the screen. The naive ways
  recomposite the whole array, or show shifted views of A and B (no copy in our code,
  but napari copies the non-contiguous view and uploads it whole on every move).
- **Blink** switches opacity, not visibility: napari re-reads and re-uploads a layer
  that becomes visible, but only redraws one whose opacity changes.
- **Erase** works band by band on the layer's own array, bounding boxes of the changes
  kept as one undo step.

Whole run: {total:,.0f} s. Reproduce: `xvfb-run -a .venv/bin/python benchmarks/bench_refine_ui.py`.
"""


if __name__ == "__main__":
    main()
