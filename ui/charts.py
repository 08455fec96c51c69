"""Live training charts (pyqtgraph): every metric a run streams, batched redraws, smoothing, zoom and pan, export.

:class:`MetricCharts` keeps series keyed by (run label, metric key). Incoming points are only appended to buffers
(:meth:`MetricCharts.add_points` costs microseconds, whatever the event rate); a QTimer redraws the changed curves
four times a second, so a fast stream never floods the event loop. Metrics are grouped into one plot per metric
name (the part after the last ``/``), so ``train/loss`` and ``eval/loss`` share a plot, and the same metric of
several runs is overlaid (the Runs page).

Smoothing is an exponential moving average (TensorBoard's: weight 0 shows the raw points), applied on display
only; the raw values are what the CSV export writes. Zoom and pan are pyqtgraph's (wheel, drag; right-drag
zooms one axis); "Fit" resets the view.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

pg.setConfigOptions(antialias=False, background="w", foreground="k")

REDRAW_MS = 250
COLUMNS = 3
# Stable colours per run (Okabe–Ito, readable for colour-blind viewers), then per metric prefix.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
# Metric names in the order the issue lists them; others follow alphabetically.
ORDER = ("loss", "eval_loss", "accuracy", "reward", "kl", "entropy", "value_loss", "lr", "learning_rate",
         "tokens_per_s", "memory_mb", "mem_mb", "peak_mem_mb")


def group_of(key: str) -> str:
    """The plot a metric goes to: the part after the last '/' (``eval/loss`` → ``loss``)."""
    return key.rsplit("/", 1)[-1]


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (a first point is not pulled towards 0); NaN passes."""
    if weight <= 0 or not values:
        return list(values)
    out: list[float] = []
    last = 0.0
    n = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(float("nan"))
            continue
        last = last * weight + (1 - weight) * v
        n += 1
        out.append(last / (1 - weight ** n))
    return out


class _Series:
    __slots__ = ("steps", "values", "dirty", "curve", "raw_curve")

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.values: list[float] = []
        self.dirty = True
        self.curve = None
        self.raw_curve = None


class MetricCharts(QWidget):
    """A grid of plots, one per metric name, with a smoothing slider and PNG/CSV export."""

    redrawn = Signal(int)  # number of points drawn (tests and the stall benchmark watch this)

    def __init__(self, parent: QWidget | None = None, *, redraw_ms: int = REDRAW_MS):
        super().__init__(parent)
        self.series: dict[tuple[str, str], _Series] = {}
        self.plots: dict[str, pg.PlotItem] = {}
        self.run_colors: dict[str, str] = {}
        self.smoothing = 0.6
        self.redraws = 0

        self.view = pg.GraphicsLayoutWidget()
        self.view.ci.setSpacing(6)
        self.empty = QLabel("No metrics yet: they appear here as the run reports them.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 99)
        self.slider.setValue(int(self.smoothing * 100))
        self.slider.setToolTip("Exponential moving average of the curves (0: raw points). The CSV export is raw.")
        self.slider.valueChanged.connect(self._smoothing_changed)
        self.smooth_label = QLabel()
        self._smoothing_changed(self.slider.value())
        fit = QPushButton("Fit")
        fit.setToolTip("Reset zoom and pan of every plot (wheel zooms, drag pans, right-drag zooms one axis)")
        fit.clicked.connect(self.fit)
        png = QPushButton("Export PNG…")
        png.clicked.connect(lambda: self._ask_export("png"))
        csv_b = QPushButton("Export CSV…")
        csv_b.clicked.connect(lambda: self._ask_export("csv"))
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Smoothing"))
        bar.addWidget(self.slider, 1)
        bar.addWidget(self.smooth_label)
        bar.addStretch(1)
        for b in (fit, png, csv_b):
            bar.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(self.empty)
        lay.addWidget(self.view, 1)
        self.view.hide()

        self.timer = QTimer(self)
        self.timer.setInterval(redraw_ms)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    # ------------------------------------------------------------------ data in
    def add_points(self, step: int, values: Mapping[str, float], run: str = "") -> None:
        """Buffer one step's metrics (drawn at the next timer tick)."""
        for key, v in values.items():
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            s = self.series.get((run, key))
            if s is None:
                s = self.series[(run, key)] = _Series()
            s.steps.append(float(step))
            s.values.append(fv)
            s.dirty = True

    def set_series(self, run: str, rows: Iterable[tuple[int, str, float]]) -> None:
        """Replace a run's series with stored metrics (``project.metrics(run_id)`` rows: step, key, value)."""
        for k in [k for k in self.series if k[0] == run]:
            self._drop(k)
        for step, key, value in rows:
            self.add_points(step, {key: value if value is not None else float("nan")}, run)

    def clear(self) -> None:
        for k in list(self.series):
            self._drop(k)
        self.view.ci.clear()
        self.plots.clear()
        self.run_colors.clear()
        self.view.hide()
        self.empty.show()

    def _drop(self, k: tuple[str, str]) -> None:
        s = self.series.pop(k)
        plot = self.plots.get(group_of(k[1]))
        if plot is not None:
            for c in (s.curve, s.raw_curve):
                if c is not None:
                    plot.removeItem(c)

    def point_count(self) -> int:
        return sum(len(s.steps) for s in self.series.values())

    def keys(self) -> list[str]:
        return sorted({k for _, k in self.series})

    # ------------------------------------------------------------------ drawing
    def _color(self, run: str, key: str) -> str:
        runs = {r for r, _ in self.series}
        if len(runs) > 1 or run:
            if run not in self.run_colors:
                self.run_colors[run] = PALETTE[len(self.run_colors) % len(PALETTE)]
            return self.run_colors[run]
        prefix = key.rsplit("/", 1)[0] if "/" in key else ""
        return {"train": PALETTE[0], "eval": PALETTE[1]}.get(prefix, PALETTE[2 + sum(map(ord, prefix)) % 4])

    def _plot_for(self, group: str) -> pg.PlotItem:
        plot = self.plots.get(group)
        if plot is None:
            self._relayout(extra=group)
            plot = self.plots[group]
        return plot

    def _relayout(self, extra: str | None = None) -> None:
        groups = set(self.plots) | ({extra} if extra else set())
        ordered = sorted(groups, key=lambda g: (ORDER.index(g) if g in ORDER else len(ORDER), g))
        for item in list(self.plots.values()):
            self.view.ci.removeItem(item)
        for i, g in enumerate(ordered):
            plot = self.plots.get(g)
            if plot is None:
                plot = pg.PlotItem(title=g.replace("_", " "))
                plot.showGrid(x=True, y=True, alpha=0.2)
                plot.addLegend(offset=(-5, 5), labelTextSize="8pt")
                plot.setLabel("bottom", "step")
                self.plots[g] = plot
            self.view.ci.addItem(plot, row=i // COLUMNS, col=i % COLUMNS)

    def redraw(self) -> None:
        """Push buffered points into the curves (the timer calls this; cheap when nothing changed)."""
        dirty = [(k, s) for k, s in self.series.items() if s.dirty]
        if not dirty:
            return
        if not self.view.isVisible() and self.series:
            self.empty.hide()
            self.view.show()
        drawn = 0
        for (run, key), s in dirty:
            plot = self._plot_for(group_of(key))
            color = self._color(run, key)
            label = f"{run} {key}".strip()
            if s.curve is None:
                s.raw_curve = plot.plot(pen=pg.mkPen(color, width=1))
                s.raw_curve.setOpacity(0.25)
                s.curve = plot.plot(pen=pg.mkPen(color, width=2), name=label,
                                    symbol="o" if len(s.steps) < 3 else None, symbolSize=4, symbolBrush=color)
            smoothed = ema(s.values, self.smoothing)
            s.curve.setData(s.steps, smoothed, connect="finite")
            if len(s.steps) >= 3:
                s.curve.setSymbol(None)
            if self.smoothing > 0:
                s.raw_curve.setData(s.steps, s.values, connect="finite")
                s.raw_curve.show()
            else:
                s.raw_curve.hide()
            s.dirty = False
            drawn += len(s.steps)
        self.redraws += 1
        self.redrawn.emit(drawn)

    def _smoothing_changed(self, value: int) -> None:
        self.smoothing = value / 100
        self.smooth_label.setText(f"{self.smoothing:.2f}")
        for s in self.series.values():
            s.dirty = True

    def set_smoothing(self, weight: float) -> None:
        self.slider.setValue(int(round(weight * 100)))

    def fit(self) -> None:
        for plot in self.plots.values():
            plot.enableAutoRange()

    # ------------------------------------------------------------------ export
    def export_png(self, path: str | Path) -> Path:
        self.redraw()
        p = Path(path)
        self.view.grab().save(str(p))
        return p

    def export_csv(self, path: str | Path) -> Path:
        """Raw points, one row per (run, step, metric): easy to pivot in any tool."""
        p = Path(path)
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["run", "step", "metric", "value"])
            for (run, key), s in sorted(self.series.items()):
                for step, value in zip(s.steps, s.values):
                    w.writerow([run, int(step), key, repr(value)])
        return p

    def _ask_export(self, kind: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export charts as {kind.upper()}", f"metrics.{kind}",
                                              f"{kind.upper()} files (*.{kind})")
        if path:
            (self.export_png if kind == "png" else self.export_csv)(path)
