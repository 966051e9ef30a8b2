"""The Rounds and Evaluate tabs of the "Refine labels" widget.

Rounds: save the ink / ignore layers as a new round of the segment
(:func:`~napari_phoenix.core.refine.save_round`, off the GUI thread), list the
rounds, load one as layers, restore one, and compare the one selected with
another (or with the current layers) in the Compare tab (:mod:`.compare_panel`).
Evaluate: a prediction against the ink / ignore / mask layers, one table row
per evaluation (:func:`~napari_phoenix.core.refine.evaluate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.refine import RefineError, evaluate, list_rounds, restore_round, save_round
from .export_panel import sentence
from .refine_tools import COLORS, defaults, load_float, show_mask

CURRENT = "current layers"


def make_table(headers: list[str], stretch: int, tips: dict | None = None) -> QTableWidget:
    """A read-only table of rows; column ``stretch`` takes the width left (long names are elided)."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    for col, tip in (tips or {}).items():
        table.horizontalHeaderItem(col).setToolTip(tip)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    table.setMinimumHeight(110)
    return table


def fill_row(table: QTableWidget, row: int, values: list) -> None:
    """Put ``values`` (as text) in a row of ``table``."""
    for col, value in enumerate(values):
        table.setItem(row, col, QTableWidgetItem(str(value)))


def _save(folder, label, ignore, kwargs):
    return save_round(folder, label, ignore, **kwargs)


def _restore(folder, number):
    from ..core.masks import read_mask

    found = restore_round(folder, number)
    return found, read_mask(Path(folder) / "label.png"), read_mask(Path(folder) / "ignore.png")


class RoundsPanel(QWidget):
    """Save round, the rounds list, Load as layers, Restore, Compare with….

    Parameters
    ----------
    host : RefineWidget
        Gives the viewer, the layers, the segment folder, the job runner and the status line.
    """

    def __init__(self, host: Any):
        super().__init__()
        self.host = host
        self.rounds: list = []
        self.folder: Path | None = None
        root = QVBoxLayout(self)
        row = QHBoxLayout()
        self.note_edit = QLineEdit(placeholderText="note: what changed and why")
        self.save_button = QPushButton("Save round", toolTip="label.png + ignore.png, and a new rounds/round-NNN")
        self.save_button.clicked.connect(self.save)
        row.addWidget(self.note_edit, 1)
        row.addWidget(self.save_button)
        root.addLayout(row)
        self.table = make_table(["#", "Date (UTC)", "Author", "Note", "Ink px"], stretch=3)
        root.addWidget(self.table, 1)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load as layers")
        self.load_button.clicked.connect(self.load)
        self.restore_button = QPushButton("Restore", toolTip="Make the selected round current (as a new round)")
        self.restore_button.clicked.connect(self.restore)
        row.addWidget(self.load_button)
        row.addWidget(self.restore_button)
        root.addLayout(row)
        row = QHBoxLayout()
        self.with_combo = QComboBox(toolTip="What the selected round is compared with")
        self.compare_button = QPushButton("Compare with…", toolTip="Difference, statistics, blink and swipe: "
                                          "in the Compare tab")  # fmt: skip
        self.compare_button.clicked.connect(self.compare)
        row.addWidget(self.compare_button)
        row.addWidget(self.with_combo, 1)
        root.addLayout(row)

    # ---- list ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """List the rounds of the segment of the ink layer picked."""
        self.folder = self.host.segment_folder(quiet=True)
        self.rounds = list_rounds(self.folder) if self.folder else []
        self.table.setRowCount(len(self.rounds))
        for i, r in enumerate(self.rounds):
            rec = r.record
            fill_row(self.table, i, [r.number, str(rec.get("date", ""))[:16].replace("T", " "), rec.get("author", ""),
                                     rec.get("note", ""), f"{rec.get('stats', {}).get('ink_px', 0):,}"])  # fmt: skip
        self.with_combo.clear()
        self.with_combo.addItems([CURRENT, *(f"round {r.number}" for r in self.rounds)])
        if self.rounds and not self.table.selectedItems():
            self.table.selectRow(len(self.rounds) - 1)
        if getattr(self.host, "compare", None) is not None:
            self.host.compare.refresh()

    def selected(self):
        """The round selected in the list (else a RefineError)."""
        rows = {i.row() for i in self.table.selectedItems()}
        if not rows or not self.rounds:
            raise RefineError("no round selected: save a round first, then pick it in the list")
        return self.rounds[min(rows)]

    # ---- actions -------------------------------------------------------------------------

    def save(self) -> None:
        """Save the ink and ignore layers as a new round (off the GUI thread)."""
        try:
            folder = self.host.segment_folder()
            ink = self.host.require("ink")
            label = ink.data != 0  # a snapshot: painting may go on while it is written
            ignore = self.host.layer("ignore")
            ignore = np.zeros_like(label) if ignore is None else np.asarray(ignore.data) != 0
            kwargs = {"note": self.note_edit.text().strip(), **self.host.provenance()}
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.host.set_status(f"Saving a round in {folder}…")
        self.host.jobs.submit("Save round", _save, folder, label, ignore, kwargs, done=self._saved)

    def _saved(self, saved) -> None:
        self.note_edit.clear()
        self.refresh()
        self.table.selectRow(len(self.rounds) - 1)
        self.host.set_status(f"Saved round {saved.number} in {saved.folder} "
                             f"({saved.record['stats']['ink_px']:,} px of ink).")  # fmt: skip

    def load(self) -> None:
        """Add the selected round's masks as "round N label" and "round N ignore" layers."""
        try:
            r = self.selected()
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.host.jobs.submit("Load round", r.masks, done=lambda m: self._loaded(r.number, *m))

    def _loaded(self, number: int, label: np.ndarray, ignore: np.ndarray) -> None:
        like = self.host.layer("ink")
        for kind, mask in (("label", label), ("ignore", ignore)):
            show_mask(self.host.viewer, mask, f"round {number} {kind}", f"round {kind}", COLORS[f"round {kind}"],
                      like=like, round=number)  # fmt: skip
        self.host.set_status(f"Round {number} shown as 'round {number} label' and 'round {number} ignore'.")

    def restore(self) -> None:
        """Make the selected round current (label.png, ignore.png, a new round), then reload the layers."""
        try:
            r, folder = self.selected(), self.host.segment_folder()
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.host.jobs.submit("Restore", _restore, folder, r.number, done=lambda res: self._restored(r.number, *res))

    def _restored(self, number: int, saved, label: np.ndarray, ignore: np.ndarray) -> None:
        ink = self.host.require("ink")
        ink.data = label.view(np.uint8)
        target = self.host.layer("ignore")
        target = self.host.new_ignore(ink) if target is None else target
        target.data = ignore.view(np.uint8)
        self.refresh()
        self.host.set_status(f"Restored round {number} as round {saved.number}; {ink.name} and {target.name} "
                             "were reloaded from label.png and ignore.png.")  # fmt: skip

    def compare(self) -> None:
        """Compare the selected round with the round (or the current layers) chosen, in the Compare tab."""
        try:
            a = self.selected().number
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        text = self.with_combo.currentText()
        self.host.compare.compare_rounds(a, None if text == CURRENT else int(text.split()[-1]))
        self.host.tabs.setCurrentWidget(self.host.compare)


def _evaluate(load, prob_src, label, ignore, mask, threshold):
    prob = load(prob_src)
    return prob, evaluate(prob, label, ignore, mask, threshold)


class EvaluatePanel(QWidget):
    """The prediction picked against the ink / ignore / mask layers: one row per evaluation.

    Parameters
    ----------
    host : RefineWidget
        Gives the prediction and label layers, the job runner and the status line.
    """

    HEADERS = ("Prediction", "Thr.", "IoU", "F1", "Prec.", "Rec.", "Kept px")

    def __init__(self, host: Any):
        super().__init__()
        self.host = host
        self.results: list[dict] = []
        root = QVBoxLayout(self)
        row = QHBoxLayout()
        self.threshold_spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2,
                                             value=defaults(evaluate)["threshold"], prefix="threshold ")  # fmt: skip
        self.evaluate_button = QPushButton("Evaluate", toolTip="Over kept pixels: not ignored, inside the mask")
        self.evaluate_button.clicked.connect(self.evaluate)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        for w in (self.threshold_spin, self.evaluate_button, clear):
            row.addWidget(w)
        root.addLayout(row)
        tips = {1: "Threshold", 4: "Precision", 5: "Recall", 6: "Pixels evaluated: not ignored, inside the mask"}
        self.table = make_table(list(self.HEADERS), stretch=0, tips=tips)
        root.addWidget(self.table, 1)

    def evaluate(self) -> None:
        """Add a row: the prediction picked, thresholded, against the labels picked (off the GUI thread)."""
        try:
            pred, ink = self.host.require("prediction"), self.host.require("ink")
            label = np.asarray(ink.data) != 0
            ignore, mask = (None if ly is None else np.asarray(ly.data) != 0
                            for ly in (self.host.layer("ignore"), self.host.layer("mask")))  # fmt: skip
            src = self.host.maps.prob(pred, label.shape)
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        threshold = self.threshold_spin.value()
        self.host.jobs.submit("Evaluate", _evaluate, load_float, src, label, ignore, mask, threshold,
                              done=lambda res: self._done(pred, threshold, *res))  # fmt: skip

    def _done(self, pred, threshold: float, prob: np.ndarray, metrics: dict) -> None:
        self.host.maps.remember(pred, prob, (self.host.layer("prediction"), self.host.layer("windows")))
        self.results.append({"prediction": pred.name, "threshold": threshold, **metrics})
        row = self.table.rowCount()
        self.table.setRowCount(row + 1)
        fill_row(self.table, row, [pred.name, f"{threshold:.2f}", *(f"{metrics[k]:.3f}" for k in
                                   ("iou", "f1", "precision", "recall")), f"{metrics['kept']:,}"])  # fmt: skip
        self.host.set_status(f"{pred.name} at {threshold:.2f}: IoU {metrics['iou']:.3f}, F1 {metrics['f1']:.3f}.")

    def clear(self) -> None:
        """Empty the table."""
        self.results.clear()
        self.table.setRowCount(0)
