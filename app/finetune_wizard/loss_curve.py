"""A small live loss plot drawn with QPainter (QtCharts is not in PySide6-Essentials).

``add(step_index, loss)`` appends a point and schedules one repaint; painting is O(points) and the
points are thinned to the widget's width, so a long run never makes a repaint slow.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

MARGIN_PX = 52
MIN_HEIGHT_PX = 160
LINE_COLOUR = "#1e88e5"


class LossCurve(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[tuple[int, float]] = []
        self.total_steps = 0
        self.setMinimumHeight(MIN_HEIGHT_PX)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName("Training loss")

    def clear(self) -> None:
        self.points.clear()
        self.update()

    def add(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self.points.append((step, loss))
            self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        area = QRectF(self.rect()).adjusted(MARGIN_PX, 8, -8, -22)
        painter.setPen(QPen(palette.mid().color()))
        painter.drawRect(area)
        painter.setPen(palette.text().color())
        if not self.points:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "The loss appears here as the training runs.")
            return
        x_max = max(self.total_steps, self.points[-1][0], 1)
        losses = [loss for _, loss in self.points]
        low, high = min(losses), max(losses)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        painter.drawText(QRectF(0, area.top() - 6, MARGIN_PX - 4, 14), Qt.AlignmentFlag.AlignRight, f"{high:.3g}")
        painter.drawText(QRectF(0, area.bottom() - 8, MARGIN_PX - 4, 14), Qt.AlignmentFlag.AlignRight, f"{low:.3g}")
        painter.drawText(
            QRectF(area.left(), area.bottom() + 4, area.width(), 16),
            Qt.AlignmentFlag.AlignCenter,
            f"step ({len(self.points)} of {x_max}) — loss, lower is better",
        )
        stride = max(1, len(self.points) // max(1, int(area.width())))
        shown = self.points[::stride] + ([self.points[-1]] if stride > 1 else [])
        xy = [
            QPointF(
                area.left() + area.width() * step / x_max,
                area.bottom() - area.height() * (loss - low) / (high - low),
            )
            for step, loss in shown
        ]
        painter.setPen(QPen(QColor(LINE_COLOUR), 2))
        painter.drawPolyline(QPolygonF(xy))
        if len(xy) == 1:
            painter.drawEllipse(xy[0], 3, 3)
