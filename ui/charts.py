"""Live training charts (pyqtgraph): every metric a run streams, batched redraws, smoothing, zoom and pan, export.

:class:`MetricCharts` keeps series keyed by (run label, metric key). Incoming points are only appended to buffers
(:meth:`MetricCharts.add_points` costs microseconds, whatever the event rate); a QTimer redraws the changed curves
four times a second, so a fast stream never floods the event loop. Metrics are grouped into one plot per metric
name (the part after the last ``/``), so ``train/loss`` and ``eval/loss`` share a plot, and the same metric of
several runs is overlaid (the Runs page).

Keeping the event loop free while a run streams (the Train page's p99 stall budget is 16 ms): each timer tick
does a bounded amount of work — it creates at most one new plot, and redraws only the plot that has waited
longest for its new points; the tick interval shrinks with the number of plots so every plot still refreshes at
least every ``REFRESH_MS`` (2.5 times a second). New plots are appended to the grid, never re-laid out. Long
curves are downsampled to the pixels they cover (pyqtgraph's peak downsampling, clipped to the view).

Smoothing is an exponential moving average (TensorBoard's: weight 0 shows the raw points), applied on display
only; the raw values are what the CSV export writes, and "Raw points" draws them faintly behind the smoothed
curve (off by default: it doubles the drawing work while a run streams). Zoom and pan are pyqtgraph's (wheel, drag; right-drag
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
    QCheckBox,
    QFileDialog,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

pg.setConfigOptions(antialias=False, background="w", foreground="k")

REDRAW_MS = 250      # timer interval with a single plot
REFRESH_MS = 400     # each plot shows its new points within this long
MIN_TICK_MS = 40
AXIS_WIDTH = 54      # px for the y tick labels ("0.0008", "12000")
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
    __slots__ = ("steps", "values", "dirty", "curve", "raw_curve", "lo", "hi")

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.values: list[float] = []
        self.dirty = True
        self.curve = None
        self.raw_curve = None
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, step: float, value: float) -> None:
        self.steps.append(step)
        self.values.append(value)
        if value == value and not math.isinf(value):
            self.lo = min(self.lo, value)
            self.hi = max(self.hi, value)
        self.dirty = True


class MetricCharts(QWidget):
    """A grid of plots, one per metric name, with a smoothing slider and PNG/CSV export."""

    redrawn = Signal(int)  # number of points drawn (tests and the stall benchmark watch this)

    def __init__(self, parent: QWidget | None = None, *, redraw_ms: int = REDRAW_MS):
        super().__init__(parent)
        self.series: dict[tuple[str, str], _Series] = {}
        self.plots: dict[str, pg.PlotItem] = {}
        self.run_colors: dict[str, str] = {}
        self.smoothing = 0.6
        self.show_raw = False
        self.redraws = 0
        self.redraw_ms = redraw_ms
        self._tick = 0
        self._waiting: dict[str, float] = {}
        self._free: list[pg.PlotItem] = []   # laid-out plots not yet given a metric
        self._manual: set[int] = set()       # plots the user zoomed or panned
        self._ranges: dict[str, tuple[float, float, float]] = {}

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
        self.raw_box = QCheckBox("Raw points")
        self.raw_box.setToolTip("Also draw the unsmoothed values, faint (off by default: it doubles the drawing "
                                "work while a run streams)")
        self.raw_box.toggled.connect(self._raw_toggled)
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
        bar.addWidget(self.raw_box)
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
            s.add(float(step), fv)

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
        self._free.clear()
        self._manual.clear()
        self._ranges.clear()
        self._waiting.clear()
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

    def _make_plot(self) -> pg.PlotItem:
        plot = pg.PlotItem(title=" ")
        # No grid: grid lines are redrawn with every axis change and doubled the cost of an update here.
        plot.addLegend(offset=(-5, 5), labelTextSize="8pt")
        plot.setLabel("bottom", "step")
        for name in ("left", "bottom"):
            axis = plot.getAxis(name)
            # No SI prefix (it re-sets the axis label's HTML on every range change) and fixed text space: a tick
            # label that grows must not re-lay out the grid, which repaints every plot.
            axis.enableAutoSIPrefix(False)
            axis.setStyle(autoExpandTextSpace=False)
            # Painted from a pixmap while its range stays: a plot repainted for new points skips its axes' text.
            axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        plot.getAxis("left").setWidth(AXIS_WIDTH)
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        # Ranges are set by _fit_range with hysteresis: an axis that changes on every update costs far more to
        # paint than the curves. A zoom or pan by the user stops that for the plot until "Fit".
        plot.enableAutoRange(False)
        plot.getViewBox().sigRangeChangedManually.connect(lambda *_a, p=plot: self._manual.add(id(p)))
        i = len(self.plots) + len(self._free)
        self.view.ci.addItem(plot, row=i // COLUMNS, col=i % COLUMNS)
        return plot

    def prepare(self, slots: int = 9) -> None:
        """Lay out ``slots`` empty plots now (e.g. when a run starts), so the first metrics only fill them in:
        creating and laying out plots is the one costly step of drawing."""
        while len(self.plots) + len(self._free) < slots:
            plot = self._make_plot()
            # An empty slot shows nothing until a metric takes it, but keeps its axes' room in the layout:
            # showing an axis later would re-lay out the grid and repaint every plot.
            plot.setOpacity(0.0)
            self._free.append(plot)
        self.empty.hide()
        self.view.show()

    def _new_plot(self, group: str) -> pg.PlotItem:
        plot = self._free.pop(0) if self._free else self._make_plot()
        plot.setOpacity(1.0)
        plot.setTitle(group.replace("_", " "))
        self.plots[group] = plot
        self._waiting[group] = 0.0
        for (run, key), s in self.series.items():
            if group_of(key) == group:
                self._make_curves(plot, run, key, s)
        return plot

    def _make_curves(self, plot: pg.PlotItem, run: str, key: str, s: _Series) -> None:
        color = self._color(run, key)
        if s.raw_curve is None and self.show_raw:
            s.raw_curve = plot.plot(pen=pg.mkPen(color, width=1))
            s.raw_curve.setOpacity(0.25)
        if s.curve is None:
            # Markers only on sparse series (eval metrics come every N steps): markers on a dense curve
            # cost more to paint than the curve itself.
            sparse = not key.startswith("train/") and len(s.steps) < 50
            s.curve = plot.plot(pen=pg.mkPen(color, width=2), name=f"{run} {key}".strip(),
                                symbol="o" if sparse else None, symbolSize=5, symbolBrush=color)

    def _missing_groups(self) -> list[str]:
        groups = {group_of(k) for _, k in self.series} - set(self.plots)
        return sorted(groups, key=lambda g: (ORDER.index(g) if g in ORDER else len(ORDER), g))

    def redraw(self, *, everything: bool = False) -> None:
        """One timer tick: create at most one new plot, then redraw the dirty plot that has waited longest
        (``everything=True``: create and redraw all, e.g. before an export)."""
        if not everything and not self.isVisible():
            return  # another page is shown: the points wait in their buffers, drawn when the charts show again
        self._tick += 1
        missing = self._missing_groups()
        if missing:
            if not self.view.isVisible():
                self.empty.hide()
                self.view.show()
            for g in missing if everything else missing[:1]:
                self._new_plot(g)
            if not everything:
                # Laying out a plot (title, curves, legend) and drawing its first points were the costliest tick
                # together: the points come at the next tick.
                self._retime()
                return
        dirty_groups = {group_of(key) for (_run, key), s in self.series.items()
                        if s.dirty and group_of(key) in self.plots}
        if not dirty_groups:
            self._retime()
            return
        order = sorted(dirty_groups, key=lambda g: self._waiting.get(g, 0.0))
        drawn = 0
        for group in order if everything else order[:1]:
            drawn += self._draw_group(group)
            self._waiting[group] = self._tick
        self.redraws += 1
        self._retime()
        self.redrawn.emit(drawn)

    def _draw_group(self, group: str) -> int:
        plot = self.plots[group]
        drawn = 0
        for (run, key), s in self.series.items():
            if group_of(key) != group or not s.dirty:
                continue
            self._make_curves(plot, run, key, s)
            smoothed = ema(s.values, self.smoothing)
            s.curve.setData(s.steps, smoothed, connect="finite")
            if s.raw_curve is not None:
                if self.show_raw and self.smoothing > 0 and len(s.steps) > 1:
                    s.raw_curve.setData(s.steps, s.values, connect="finite")
                    s.raw_curve.show()
                else:
                    s.raw_curve.hide()
            s.dirty = False
            drawn += len(s.steps)
        if id(plot) not in self._manual:
            self._fit_range(group, plot)
        return drawn

    def _fit_range(self, group: str, plot: pg.PlotItem, force: bool = False) -> None:
        """Keep the data in view, changing the range only when the data leaves it (x grows by half again) or
        fills less than a third of it (y), so most updates leave the axes alone."""
        members = [s for (_r, k), s in self.series.items() if group_of(k) == group and s.steps]
        if not members:
            return
        x_max = max(s.steps[-1] for s in members)
        lo = min(s.lo for s in members)
        hi = max(s.hi for s in members)
        if not math.isfinite(lo) or not math.isfinite(hi):
            return
        x1, y0, y1 = self._ranges.get(group, (0.0, math.inf, -math.inf))
        span = (hi - lo) or max(abs(hi), 1e-12)
        changed = force
        if x_max > x1 or force:
            x1 = max(10.0, x_max * 1.5) if not force else max(1.0, x_max)
            changed = True
        if lo < y0 or hi > y1 or (hi - lo) < (y1 - y0) / 3 or force:
            # Room ahead on the side the data left by (a falling loss keeps falling), so the next points stay in.
            below, above = (0.1, 0.1) if force else (0.3 if lo < y0 else 0.1, 0.3 if hi > y1 else 0.1)
            y0, y1 = lo - below * span, hi + above * span
            changed = True
        if changed:
            self._ranges[group] = (x1, y0, y1)
            plot.setRange(xRange=(0, x1), yRange=(y0, y1), padding=0)

    def _retime(self) -> None:
        n = max(1, len(self.plots))
        interval = max(MIN_TICK_MS, min(self.redraw_ms, REFRESH_MS // n))
        if self.timer.interval() != interval:
            self.timer.setInterval(interval)

    def flush(self, *, fit: bool = False) -> None:
        """Draw everything buffered now (exports, screenshots, tests, finished runs); ``fit``: tight ranges, for
        a curve that will not grow any more."""
        self.redraw(everything=True)
        if fit:
            self.fit()

    def _smoothing_changed(self, value: int) -> None:
        self.smoothing = value / 100
        self.smooth_label.setText(f"{self.smoothing:.2f}")
        for s in self.series.values():
            s.dirty = True

    def _raw_toggled(self, on: bool) -> None:
        self.show_raw = on
        for s in self.series.values():
            s.dirty = True

    def set_smoothing(self, weight: float) -> None:
        self.slider.setValue(int(round(weight * 100)))

    def fit(self) -> None:
        """Undo zoom and pan: every plot shows all its data again (and follows new data)."""
        self._manual.clear()
        for group, plot in self.plots.items():
            self._fit_range(group, plot, force=True)

    # ------------------------------------------------------------------ export
    def export_png(self, path: str | Path) -> Path:
        self.flush()
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
