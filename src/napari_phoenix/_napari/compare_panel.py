"""The Compare tab of the "Refine labels" widget: two rounds, or two predictions, side by side.

*Compare* computes a difference layer and a statistics table off the GUI
thread (:func:`~napari_phoenix.core.compare.compare_masks`,
:func:`~napari_phoenix.core.compare.compare_predictions`). Then:

* **Blink** shows A and B in turn, on a timer (*Blink*, Shift+K) or by hand
  (*A ⇄ B*, K);
* **Swipe** shows A left of a vertical line and B right of it. The swipe layer
  is one composite (:class:`~napari_phoenix.core.compare.Swipe`): moving the
  line copies only the columns it passed over, and the composite of a large
  segment is a pyramid shown as a multiscale layer, so after a move napari reads and
  uploads only what is in view, at the level that fits the screen (a small
  image, one level: a Labels swipe uploads only the strip). Shifted views of A
  and B would need no copy, but napari copies a non-contiguous view and uploads
  it whole on every move: several times slower on 10,000 x 14,000 (see
  ``benchmarks/bench_refine_ui.py``).
* Blink switches opacity, not visibility: napari re-reads and re-uploads a
  layer that becomes visible, but only redraws one whose opacity changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.compare import DIFF_CODES, PREDICTION_CODES, Swipe, compare_masks, compare_predictions
from ..core.refine import RefineError
from .export_panel import sentence
from .refine_tools import (
    COLORS,
    DIFF_COLORS,
    TRANSPARENT,
    find_layer,
    level0,
    load_float,
    refresh_region,
)
from .rounds_panel import fill_row, make_table

ROUNDS, PREDICTIONS = "two rounds", "two predictions"
CURRENT = "current layers"
BLINK_MS = 600
PREDICTION_COLORS = {1: DIFF_COLORS[1], 2: DIFF_COLORS[2]}
KEYS = {"K": "A ⇄ B", "Shift-K": "blink on / off"}
SWIPE_LINE = 3  # the line's value in a Labels swipe layer (white)


class _Display:
    """A (label, ignore) pair seen as one uint8 image, block by block: 1 ink, 2 ignore (without ink)."""

    def __init__(self, label: Any, ignore: Any):
        self.label, self.ignore, self.shape = label, ignore, label.shape

    def __getitem__(self, key):
        ink = np.asarray(self.label[key]) != 0
        out = ink.view(np.uint8).copy()
        if self.ignore is not None:
            out[(np.asarray(self.ignore[key]) != 0) & ~ink] = 2
        return out


def _to_uint8(block: np.ndarray) -> np.ndarray:
    """Probabilities 0..1 to 0..255 for the swipe layer (display only)."""
    return (np.clip(block, 0, 1) * 255 + 0.5).astype(np.uint8)


def _rounds_job(pair_a, pair_b):
    masks = [p.masks() if hasattr(p, "masks") else p for p in (pair_a, pair_b)]
    diff, stats = compare_masks(masks[0][0], masks[0][1], masks[1][0], masks[1][1])
    return masks, diff, stats


def _predictions_job(src_a, src_b, threshold, mask, signed):
    pa, pb = load_float(src_a), load_float(src_b)
    diff, stats = compare_predictions(pa, pb, threshold, mask, codes=True)
    return pa, pb, diff, (pb - pa if signed else None), stats


class ComparePanel(QWidget):
    """Two rounds or two predictions: difference layer, statistics table, blink and swipe.

    Parameters
    ----------
    host : RefineWidget
        Gives the viewer, the layers, the rounds, the job runner and the status line.
    """

    def __init__(self, host: Any):
        super().__init__()
        self.host = host
        self.result: dict = {}  # the last comparison: mode, names, data, stats
        self.stats: dict = {}
        self._looks: list = []  # (layer, visible, opacity) before a blink or swipe, put back by stop()
        self._added: list = []  # layers added for a blink, removed by stop()
        self._pair_shown: tuple = ()  # the two layers a blink shows in turn
        self._showing_a = False
        self.swiper: Swipe | None = None
        self.swipe_layer = None  # the layer that shows the composite
        root = QVBoxLayout(self)
        form = QFormLayout()
        self.mode_combo = QComboBox(toolTip="Compare two saved rounds (or one with the layers now), or two predictions")
        self.mode_combo.addItems([ROUNDS, PREDICTIONS])
        self.a_combo = QComboBox(toolTip="A: the older version (left of the swipe line)")
        self.b_combo = QComboBox(toolTip="B: the newer version (right of the swipe line)")
        self.threshold_spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2, value=0.5,
                                             toolTip="Ink where probability >= threshold")  # fmt: skip
        self.signed_check = QCheckBox("Also a signed difference image (B − A)")
        for label, w in (("Compare", self.mode_combo), ("A", self.a_combo), ("B", self.b_combo),
                         ("Threshold", self.threshold_spin), ("", self.signed_check)):
            form.addRow(label, w)
        root.addLayout(form)
        self.compare_button = QPushButton("Compare A → B", toolTip="A difference layer and the statistics below")
        self.compare_button.clicked.connect(self.compare)
        root.addWidget(self.compare_button)
        self.table = make_table(["", "A", "B", "Change"], stretch=0)
        self.table.setMaximumHeight(170)
        root.addWidget(self.table)
        self.legend = QLabel(wordWrap=True)
        root.addWidget(self.legend)
        row = QHBoxLayout()
        self.blink_button = QPushButton("Blink (Shift+K)", checkable=True, toolTip="Show A and B in turn")
        self.blink_button.toggled.connect(self.blink)
        self.rate_spin = QSpinBox(minimum=100, maximum=5000, singleStep=100, value=BLINK_MS, suffix=" ms",
                                  toolTip="How long each of A and B is shown while blinking")  # fmt: skip
        self.rate_spin.valueChanged.connect(lambda ms: self.blink_timer.setInterval(ms))
        self.flip_button = QPushButton("A ⇄ B (K)", toolTip="Show the other one (by hand)")
        self.flip_button.clicked.connect(self.flip)
        for w in (self.blink_button, self.rate_spin, self.flip_button):
            row.addWidget(w)
        root.addLayout(row)
        row = QHBoxLayout()
        self.swipe_button = QPushButton("Swipe", checkable=True, toolTip="A left of a vertical line, B right of it")
        self.swipe_button.toggled.connect(self.swipe)
        self.swipe_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=1000, value=500, enabled=False)
        self.swipe_slider.setToolTip("Where the line is (columns of the segment)")
        self.swipe_slider.valueChanged.connect(self.move_swipe)
        row.addWidget(self.swipe_button)
        row.addWidget(self.swipe_slider, 1)
        root.addLayout(row)
        root.addStretch(1)
        self.blink_timer = QTimer(self, interval=BLINK_MS)
        self.blink_timer.timeout.connect(self.flip)
        self._chosen = False  # A or B picked by the user: kept while the lists change
        for combo in (self.a_combo, self.b_combo):
            combo.activated.connect(lambda _: setattr(self, "_chosen", True))
        self.mode_combo.currentIndexChanged.connect(lambda _: (setattr(self, "_chosen", False), self.refresh()))
        self.refresh()

    # ---- choices -------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``two rounds`` or ``two predictions``."""
        return self.mode_combo.currentText()

    def refresh(self) -> None:
        """Fill A and B with the rounds of the segment (and the current layers) or the prediction layers."""
        rounds = self.mode == ROUNDS
        if rounds:
            items = [*(f"round {r.number}" for r in self.host.rounds.rounds), CURRENT]
            default_a, default_b = max(len(items) - 2, 0), len(items) - 1
        else:
            items = [ly.name for ly in self.host._candidates("image2")]
            default_a, default_b = 0, min(1, len(items) - 1)
        keep = [self.a_combo.currentText(), self.b_combo.currentText()]
        if not self._chosen or keep[0] == keep[1] or not all(k in items for k in keep):  # else the user's choice
            keep = [items[default_a] if items else "", items[default_b] if items else ""]
        for combo, text in zip((self.a_combo, self.b_combo), keep, strict=True):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(items)
            combo.setCurrentText(text)
            combo.blockSignals(False)
        self.threshold_spin.setEnabled(not rounds)
        self.signed_check.setEnabled(not rounds)
        codes, colors = (DIFF_CODES, DIFF_COLORS) if rounds else (PREDICTION_CODES, PREDICTION_COLORS)
        self.legend.setText("Difference layer: " + "  ".join(
            f"<span style='color:{c}'>■</span> {k} {codes[k]}" for k, c in colors.items()))  # fmt: skip

    def pick(self, mode: str, a: str, b: str) -> None:
        """Choose what to compare, e.g. ``pick("two rounds", "round 1", "current layers")``."""
        self.mode_combo.setCurrentText(mode)
        self.refresh()
        self.a_combo.setCurrentText(a)
        self.b_combo.setCurrentText(b)
        self._chosen = True

    def compare_rounds(self, a: int, b: int | None) -> None:
        """Compare round ``a`` with round ``b`` (None: the current layers); the Rounds tab's *Compare with…*."""
        self.pick(ROUNDS, f"round {a}", CURRENT if b is None else f"round {b}")
        self.compare()

    # ---- compare -------------------------------------------------------------------------

    def _pair(self, which: str):
        if which == CURRENT:
            ink = self.host.require("ink")
            ignore = self.host.layer("ignore")
            label = np.asarray(ink.data) != 0  # snapshots: painting may go on meanwhile
            return label, (np.zeros_like(label) if ignore is None else np.asarray(ignore.data) != 0)
        number = int(which.split()[-1])
        return next(r for r in self.host.rounds.rounds if r.number == number)

    def compare(self) -> None:
        """The difference layer and statistics of A → B (off the GUI thread)."""
        a, b, mode = self.a_combo.currentText(), self.b_combo.currentText(), self.mode
        try:
            if mode == ROUNDS and not self.host.rounds.rounds:
                raise RefineError("nothing to compare: save a round (Rounds tab), then compare it with another "
                                  "round or with the current layers")  # fmt: skip
            if mode == PREDICTIONS and self.a_combo.count() < 2:
                raise RefineError("nothing to compare: open two predictions as 2-D Image layers")
            if a == b:
                raise RefineError(f"A and B are both {a}: pick two different ones")
            if mode == ROUNDS:
                fn, args = _rounds_job, (self._pair(a), self._pair(b))
            else:
                src_a, src_b = (self.host.maps.prob(self.host.viewer.layers[n]) for n in (a, b))
                if src_a.shape != src_b.shape:
                    raise RefineError(f"{b} is {src_b.shape[0]:,} x {src_b.shape[1]:,} px, {a} "
                                      f"{src_a.shape[0]:,} x {src_a.shape[1]:,} px: compare two predictions of "
                                      "one segment")  # fmt: skip
                mask = self.host.layer("mask")
                mask = None if mask is None or mask.data.shape != src_a.shape else mask.data
                fn = _predictions_job
                args = (src_a, src_b, self.threshold_spin.value(), mask, self.signed_check.isChecked())
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.stop()
        self.host.set_status(f"Comparing {a} → {b}…")
        self.host.jobs.submit("Compare", fn, *args, done=lambda res: self._compared(mode, a, b, *res))

    def _compared(self, mode: str, a: str, b: str, *res) -> None:
        self.stop()
        viewer, place = self.host.viewer, self.host.placement()
        name = f"{a} → {b}"
        if mode == ROUNDS:
            masks, diff, stats = res
            self.result = {"mode": mode, "a": a, "b": b, "masks": masks}
            layer = self._diff_layer("round diff", name, diff, DIFF_COLORS, place)
            s = stats
            rows = [("Ink px", s["ink_a"], s["ink_b"], f"+{s['ink_added']:,} / −{s['ink_removed']:,}"),
                    ("Ignore px", s["ignore_a"], s["ignore_b"], f"+{s['ignore_added']:,} / −{s['ignore_removed']:,}"),
                    ("Ink IoU", "", "", f"{s['ink_iou']:.3f}"), ("Ignore IoU", "", "", f"{s['ignore_iou']:.3f}")]  # fmt: skip
        else:
            pa, pb, diff, signed, stats = res
            la, lb = viewer.layers[a], viewer.layers[b]
            self.host.maps.remember(la, pa, (lb, self.host.layer("prediction"), self.host.layer("windows")))
            self.host.maps.remember(lb, pb, (la, self.host.layer("prediction"), self.host.layer("windows")))
            self.result = {"mode": mode, "a": a, "b": b, "probs": (pa, pb)}
            place = {"translate": tuple(lb.translate[-2:]), "scale": tuple(lb.scale[-2:])}
            layer = self._diff_layer("prediction diff", f"{name} ink change", diff, PREDICTION_COLORS, place)
            self._signed_layer(signed, f"{name} signed difference", place)
            s, t = stats, self.threshold_spin.value()
            rows = [(f"Ink px (≥ {t:.2f})", s["ink_a"], s["ink_b"],
                     f"+{s['became_ink']:,} / −{s['stopped_being_ink']:,}"),
                    ("Ink IoU", "", "", f"{s['ink_iou']:.3f}"), ("Mean |B − A|", "", "", f"{s['mean_abs_change']:.4f}")]  # fmt: skip
        self.stats = stats
        self.table.setRowCount(len(rows))
        for i, (what, va, vb, change) in enumerate(rows):
            fill_row(self.table, i, [what, *(f"{v:,}" if isinstance(v, int) else v for v in (va, vb)), change])
        self.host.set_status(f"Compared {name}: the difference is the layer '{layer.name}'. Blink (K, Shift+K) "
                             "or swipe to see A and B.")  # fmt: skip

    def _diff_layer(self, role: str, name: str, diff: np.ndarray, colors: dict, place: dict) -> Any:
        layer = find_layer(self.host.viewer, role)
        meta = {"phoenix": {"role": role, "pair": [self.result["a"], self.result["b"]]}}
        if layer is not None and layer.data.shape == diff.shape:
            layer.data, layer.name, layer.metadata = diff, name, meta
            return layer
        if layer is not None:
            self.host.viewer.layers.remove(layer)
        return self.host.viewer.add_labels(diff, name=name, colormap={**TRANSPARENT, **colors}, opacity=0.9,
                                           metadata=meta, **place)  # fmt: skip

    def _signed_layer(self, signed: np.ndarray | None, name: str, place: dict) -> None:
        from napari.utils.colormaps import Colormap

        layer = find_layer(self.host.viewer, "prediction signed diff")
        if layer is not None:
            self.host.viewer.layers.remove(layer)
        if signed is None:
            return
        cmap = Colormap([[1, 0.19, 0.19, 1], [0, 0, 0, 0], [0.19, 0.88, 0.19, 1]], name="phoenix red-clear-green")
        self.host.viewer.add_image(signed, name=name, colormap=cmap, contrast_limits=(-1, 1), blending="translucent",
                                   metadata={"phoenix": {"role": "prediction signed diff"}}, **place)  # fmt: skip

    # ---- A and B as layers -----------------------------------------------------------------

    def _sources(self) -> tuple:
        """What A and B show: two rounds as compared (1 ink, 2 ignore), or two probability maps."""
        if self.result["mode"] == ROUNDS:
            (la, ia), (lb, ib) = self.result["masks"]
            return _Display(la, ia), _Display(lb, ib), None
        pa, pb = self.result["probs"]
        return pa, pb, _to_uint8

    def _predictions(self) -> list:
        try:
            return [self.host.viewer.layers[self.result[k]] for k in ("a", "b")]
        except KeyError as err:
            raise RefineError(f"layer {err} was removed: compare again") from None

    def _cover(self) -> list:
        """The layers a blink or swipe of rounds hides: ink, ignore and rounds shown as layers."""
        found = [self.host.layer("ink"), self.host.layer("ignore")]
        found += [ly for ly in self.host.viewer.layers
                  if ly.metadata.get("phoenix", {}).get("role") in ("round label", "round ignore")]  # fmt: skip
        return [ly for i, ly in enumerate(found) if ly is not None and ly not in found[:i]]

    def _remember(self, layers: list) -> None:
        """Keep the looks of ``layers`` (visibility, opacity) for :meth:`stop` to put back."""
        known = {id(ly) for ly, _, _ in self._looks}
        self._looks += [(ly, ly.visible, ly.opacity) for ly in layers if id(ly) not in known]

    def _side_layer(self, tag: str, source: Any) -> Any:
        """A round as one layer (a pyramid: cheap to show again at any size)."""
        pyramid = Swipe(source, source, column=source.shape[1], levels=Swipe.levels_for(source.shape))
        data = pyramid.levels if len(pyramid.levels) > 1 else pyramid.data
        name = f"{tag}: {self.result[tag.lower()]}"
        layer = self.host.viewer.add_labels(data, name=name, multiscale=len(pyramid.levels) > 1, opacity=0.8,
                                            colormap={**TRANSPARENT, 1: COLORS["round label"],
                                                      2: COLORS["round ignore"]},
                                            metadata={"phoenix": {"role": "compare side"}},
                                            **self.host.placement())  # fmt: skip
        self._added.append(layer)
        return layer

    def _blink_layers(self) -> tuple:
        """The two layers shown in turn (added for two rounds; the prediction layers themselves)."""
        if not self.result:
            raise RefineError("compare A and B first (Compare A → B), then blink or swipe them")
        if not self._pair_shown:
            if self.result["mode"] == PREDICTIONS:
                pair = self._predictions()
                self._remember(pair)
            else:
                cover = self._cover()
                self._remember(cover)
                for ly in cover:
                    ly.visible = False
                src_a, src_b, _ = self._sources()
                pair = [self._side_layer("A", src_a), self._side_layer("B", src_b)]
                self._remember(pair)
            self._pair_shown = tuple(pair)
        return self._pair_shown

    def flip(self) -> None:
        """Show the other of A and B (the first press shows A only)."""
        if self.swiper is not None:
            self.stop()
        try:
            a, b = self._blink_layers()
            if a not in self.host.viewer.layers or b not in self.host.viewer.layers:
                raise RefineError("a layer of the comparison was removed: compare again")
        except RefineError as err:
            self.stop()
            return self.host.set_status(sentence(err), error=True)
        self._showing_a = not self._showing_a
        opacity = {id(ly): o for ly, _, o in self._looks}
        for ly, on in ((a, self._showing_a), (b, not self._showing_a)):
            ly.visible = True  # by opacity: a layer made visible again would be re-read and re-uploaded
            ly.opacity = opacity[id(ly)] if on else 0.0
        self.host.set_status(f"Showing {'A' if self._showing_a else 'B'}: "
                             f"{self.result['a' if self._showing_a else 'b']}.")  # fmt: skip

    def blink(self, on: bool) -> None:
        """Show A and B in turn every ``rate`` ms (on), or stop and show both as before (off)."""
        if not on:
            return self.stop()
        self._showing_a = False
        self.flip()
        if self._pair_shown:
            self._set_checked(self.blink_button, True)
            self.blink_timer.start(self.rate_spin.value())
        else:
            self._set_checked(self.blink_button, False)

    def toggle_blink(self) -> None:
        """Blink on / off (the Shift+K key)."""
        self.blink_button.setChecked(not self.blink_button.isChecked())

    # ---- swipe ---------------------------------------------------------------------------

    def swipe(self, on: bool) -> None:
        """A left of the line and B right of it in one swipe layer (on), or A and B as before (off)."""
        self.stop()
        if not on:
            return
        try:
            if not self.result:
                raise RefineError("compare A and B first (Compare A → B), then blink or swipe them")
            rounds = self.result["mode"] == ROUNDS
            cover = self._cover() if rounds else self._predictions()
            src_a, src_b, convert = self._sources()
            width = src_a.shape[1]
            self.swiper = Swipe(src_a, src_b, width // 2, convert=convert, levels=Swipe.levels_for(src_a.shape),
                                line=SWIPE_LINE if rounds else 255)  # fmt: skip
        except RefineError as err:
            self._set_checked(self.swipe_button, False)
            return self.host.set_status(sentence(err), error=True)
        self._remember(cover)
        for ly in cover:
            ly.visible = False
        data = self.swiper.levels if len(self.swiper.levels) > 1 else self.swiper.data
        kw = {"name": f"swipe: {self.result['a']} | {self.result['b']}", "metadata": {"phoenix": {"role": "swipe"}},
              "multiscale": len(self.swiper.levels) > 1}
        if rounds:
            colors = {**TRANSPARENT, 1: COLORS["round label"], 2: COLORS["round ignore"], SWIPE_LINE: "#ffffff"}
            self.swipe_layer = self.host.viewer.add_labels(data, opacity=0.8, colormap=colors, **kw,
                                                           **self.host.placement())  # fmt: skip
        else:
            like = cover[1]
            to255 = 255 if level0(like).dtype.kind == "f" else 255 / np.iinfo(level0(like).dtype).max
            self.swipe_layer = self.host.viewer.add_image(data, colormap=like.colormap, **kw,
                                                          contrast_limits=[v * to255 for v in like.contrast_limits],
                                                          translate=tuple(like.translate[-2:]),
                                                          scale=tuple(like.scale[-2:]))  # fmt: skip
        self._set_checked(self.swipe_button, True)
        self.swipe_slider.blockSignals(True)
        self.swipe_slider.setMaximum(width)
        self.swipe_slider.setValue(self.swiper.column)
        self.swipe_slider.blockSignals(False)
        self.swipe_slider.setEnabled(True)
        self.host.set_status(f"Swipe: {self.result['a']} left of the line, {self.result['b']} right; move the slider.")

    def move_swipe(self, column: int) -> None:
        """Put the swipe line at ``column``: only the columns it passed over are copied, then shown."""
        if self.swiper is None:
            return
        region = self.swiper.move(column)
        layer = self.swipe_layer
        if region is None or layer not in self.host.viewer.layers:
            return
        if not layer.multiscale and hasattr(layer, "selected_label"):  # one level: upload only that strip
            refresh_region(layer, region)
        else:  # a pyramid: napari reads and uploads only what is in view, at the level that fits
            layer.refresh()

    def _end_swipe(self) -> None:
        if self.swiper is None:
            return
        if self.swipe_layer in self.host.viewer.layers:
            self.host.viewer.layers.remove(self.swipe_layer)
        self.swiper, self.swipe_layer = None, None
        self.swipe_slider.setEnabled(False)
        self._set_checked(self.swipe_button, False)

    # ---- plumbing ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop blinking and swiping: the layers added for it go, the others look as they did."""
        self.blink_timer.stop()
        self._end_swipe()
        for ly in self._added:
            if ly in self.host.viewer.layers:
                self.host.viewer.layers.remove(ly)
        for ly, visible, opacity in self._looks:
            ly.visible, ly.opacity = visible, opacity
        self._looks, self._added, self._pair_shown, self._showing_a = [], [], (), False
        self._set_checked(self.blink_button, False)

    @staticmethod
    def _set_checked(button: QPushButton, on: bool) -> None:
        if button.isChecked() != on:
            button.blockSignals(True)
            button.setChecked(on)
            button.blockSignals(False)
