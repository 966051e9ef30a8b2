"""A small QPainter plot of a training run: loss per step, validation loss and IoU per epoch.

No matplotlib: the x axis is the step of the run (0 … total), the left axis
the losses (0 … the largest seen), the right axis the IoU (0 … 1). The
points come from the events of :func:`napari_phoenix.core.train.loop.iter_train`.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_MARGIN = (40, 22, 36, 20)  # left, top, right, bottom, px
TRAIN, VAL, IOU = QColor("#3090ff"), QColor("#f0a020"), QColor("#40c060")


def _ticks(top: float) -> list[float]:
    """Two to five round values in (0, top]."""
    if top <= 0:
        return []
    step = 10 ** math.floor(math.log10(top / 2))
    step *= next((m for m in (1, 2, 5, 10) if top / (m * step) <= 5), 10)
    return [k * step for k in range(1, int(top / step + 1e-9) + 1)][:5]


class TrainPlot(QWidget):
    """Training loss (each step), validation loss and IoU (each epoch) of one run.

    Parameters
    ----------
    parent : QWidget, optional
        The parent widget.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.steps: list[tuple[int, float]] = []
        self.epochs: list[tuple[int, float, float]] = []
        self.total = 0
        self.setMinimumSize(200, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Blue: training loss of each step. Orange: validation loss, green: validation IoU "
                        "(right axis) after each epoch.")  # fmt: skip

    def sizeHint(self) -> QSize:
        return QSize(280, 180)

    def clear(self, total: int = 0) -> None:
        """Forget the points; the x axis will go to ``total`` steps.

        Parameters
        ----------
        total : int
            Steps of the run.
        """
        self.steps, self.epochs, self.total = [], [], int(total)
        self.update()

    def set_total(self, total: int) -> None:
        """Make the x axis go to ``total`` steps (the run's length, known once it starts).

        Parameters
        ----------
        total : int
            Steps of the run.
        """
        self.total = int(total)
        self.update()

    def add_step(self, step: int, loss: float) -> None:
        """Add the training loss after ``step`` steps.

        Parameters
        ----------
        step : int
            Steps done in the run.
        loss : float
            The batch's loss.
        """
        self.steps.append((int(step), float(loss)))
        self.update()

    def add_epoch(self, step: int, val_loss: float, iou: float) -> None:
        """Add the validation loss and IoU of the epoch that ended after ``step`` steps.

        Parameters
        ----------
        step : int
            Steps done in the run.
        val_loss : float
            Validation loss.
        iou : float
            Validation IoU (0 … 1).
        """
        self.epochs.append((int(step), float(val_loss), float(iou)))
        self.update()

    # ---- drawing -------------------------------------------------------------------------

    def _frame(self) -> QRectF:
        left, top, right, bottom = _MARGIN
        return QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fg = pal.color(pal.ColorRole.WindowText)
        f = self._frame()
        p.fillRect(f, pal.color(pal.ColorRole.Base))
        font = p.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
        p.setFont(font)
        xs = [s for s, _ in self.steps] + [s for s, *_ in self.epochs]
        x_max = max([self.total, 1, *xs])
        losses = [v for _, v in self.steps] + [v for _, v, _ in self.epochs]
        losses = [v for v in losses if math.isfinite(v)]
        y_max = max(losses) * 1.1 if losses and max(losses) > 0 else 1.0

        def px(x: float, y: float, top: float) -> QPointF:
            return QPointF(f.left() + x / x_max * f.width(), f.bottom() - min(y, top) / top * f.height())

        grid = QColor(fg)
        grid.setAlpha(50)
        left_ticks = _ticks(y_max)
        for v in left_ticks:
            p.setPen(QPen(grid, 1))
            p.drawLine(px(0, v, y_max), px(x_max, v, y_max))
            p.setPen(QPen(fg, 1))
            pt = px(0, v, y_max)
            p.drawText(QRectF(0, pt.y() - 7, f.left() - 4, 14), Qt.AlignmentFlag.AlignRight, f"{v:g}")
        p.setPen(QPen(IOU, 1))
        for v in (0.0, 0.5, 1.0):
            pt = px(x_max, v, 1.0)
            p.drawText(QRectF(f.right() + 4, pt.y() - 7, 32, 14), Qt.AlignmentFlag.AlignLeft, f"{v:g}")
        p.setPen(QPen(fg, 1))
        p.drawRect(f)
        for x in (0, x_max):
            pt = px(x, 0, 1.0)
            p.drawText(QRectF(pt.x() - 30, f.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignHCenter, str(x))
        p.drawText(QRectF(f.left(), f.bottom() + 2, f.width(), 14), Qt.AlignmentFlag.AlignHCenter, "step")
        self._legend(p, f)
        finite = [(s, v) for s, v in self.steps if math.isfinite(v)]
        self._line(p, [px(s, v, y_max) for s, v in finite], TRAIN, dots=len(finite) < 3)
        self._line(p, [px(s, v, y_max) for s, v, _ in self.epochs if math.isfinite(v)], VAL, dots=True)
        self._line(p, [px(s, v, 1.0) for s, _, v in self.epochs if math.isfinite(v)], IOU, dots=True)
        p.end()

    @staticmethod
    def _line(p: QPainter, points: list[QPointF], color: QColor, dots: bool) -> None:
        if not points:
            return
        p.setPen(QPen(color, 1.5))
        p.setBrush(Qt.BrushStyle.NoBrush)
        if len(points) > 1:
            path = QPainterPath(points[0])
            for q in points[1:]:
                path.lineTo(q)
            p.drawPath(path)
        if dots:
            p.setBrush(color)
            for q in points:
                p.drawEllipse(q, 3.0, 3.0)

    def _legend(self, p: QPainter, f: QRectF) -> None:
        x = f.left()
        for color, text in ((TRAIN, "train loss"), (VAL, "val loss"), (IOU, "val IoU (right)")):
            p.setPen(QPen(color, 2))
            p.drawLine(QPointF(x, 10), QPointF(x + 14, 10))
            p.setPen(QPen(self.palette().color(self.palette().ColorRole.WindowText), 1))
            width = p.fontMetrics().horizontalAdvance(text)
            p.drawText(QRectF(x + 18, 3, width + 2, 14), Qt.AlignmentFlag.AlignLeft, text)
            x += width + 32
