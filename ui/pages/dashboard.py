"""Dashboard: counts, judgments per hour, verdicts (left, right, tie, both bad: as the expert gave them), strengths,
left/right position bias with an exact binomial test, test–retest agreement and flags by category, as pyqtgraph
charts.

This module (and so pyqtgraph) is imported only when the page is first shown, keeping the cold start small.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from workbench.session_stats import judgments_per_hour, position_bias, retest_agreement, session_rate, time_spent_median_ms
from workbench.sides import STRENGTH_WORDS
from workbench.taxonomy import STRENGTHS

from .base import Page

pg.setConfigOptions(antialias=True, background="w", foreground="k")


def _bars(title: str, labels: list[str], values: list[float], color: str) -> pg.PlotWidget:
    w = pg.PlotWidget(title=title)
    w.setMenuEnabled(False)
    w.setMouseEnabled(x=False, y=False)
    w.hideButtons()
    xs = list(range(len(labels)))
    w.addItem(pg.BarGraphItem(x=xs, height=values, width=0.6, brush=color))
    w.getAxis("bottom").setTicks([list(zip(xs, labels))])
    w.setYRange(0, max(values + [1]) * 1.15)
    return w


class DashboardPage(Page):
    name = "dashboard"
    title = "Dashboard"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("font-size: 13px;")
        self.grid = QGridLayout()
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addLayout(self.grid, 1)
        self.charts: dict[str, pg.PlotWidget] = {}

    def activate(self) -> None:
        super().activate()
        self.refresh()

    def refresh(self) -> None:
        p = self.project
        stats = p.stats()
        bias = position_bias(p)
        retest = retest_agreement(p)
        hours = judgments_per_hour(p, hours=24)
        median = time_spent_median_ms(p)
        self.data = {"stats": stats, "bias": bias, "retest": retest, "hours": hours}
        rate = session_rate(self.session.actions, self.session.elapsed())
        if bias.n:
            verdict = "no evidence of a side preference" if bias.p_value >= 0.05 else "you favour one side: check your habit"
            bias_text = (
                f"<b>Position bias:</b> left picked in {bias.left_picks:,} of {bias.n:,} verdicts for one side "
                f"({bias.share_left:.1%}); exact binomial test p = {bias.p_value:.3g} — {verdict}."
            )
        else:
            bias_text = "<b>Position bias:</b> no verdict for the left or the right response yet."
        if retest.pairs:
            kappa = "n/a" if math.isnan(retest.kappa) else f"{retest.kappa:.2f}"
            retest_text = (
                f"<b>Test–retest:</b> {retest.agree} of {retest.pairs} retests agree ({retest.rate:.0%}); "
                f"same strength too: {retest.exact}; Cohen's κ = {kappa}."
            )
        else:
            retest_text = "<b>Test–retest:</b> no retest judged yet (a share of judged items comes back, blind, in the queue)."
        self.summary.setText(
            f"<b>{stats['judged']:,}</b> judged · {stats['pending']:,} pending · {stats['rankings']:,} rankings · "
            f"{stats['demonstrations']:,} demonstrations · {stats['flags']:,} flags · "
            f"this session {self.session.actions} actions ({rate:.0f}/hour)"
            + (f" · median time per judgment {median / 1000:.1f} s" if median else "")
            + f"<br>{bias_text}<br>{retest_text}"
        )
        for w in self.charts.values():
            self.grid.removeWidget(w)
            w.deleteLater()
        v = stats["verdicts"]
        # Verdicts as the expert gave them: for the response shown on the left or on the right. Imported judgments
        # and written answers beating the shown responses were never shown side by side, so they have no side.
        labels, values = ["left", "right", "tie", "both bad"], [bias.left_picks, bias.n - bias.left_picks, v["tie"], v["both_bad"]]
        sideless = v["a"] + v["b"] - bias.n
        if sideless:
            labels.append("no side shown")
            values.append(sideless)
        self.charts = {
            "verdicts": _bars("Verdicts", labels, values, "#4a7bd0"),
            "strengths": _bars("Strength (left or right)", [STRENGTH_WORDS[s] for s in STRENGTHS],
                               [stats["strengths"][s] for s in STRENGTHS], "#7b4ad0"),
            "flags": _bars(
                "Flags by category",
                [k.replace("_", " ")[:12] for k in stats["flag_categories"]] or ["none"],
                list(stats["flag_categories"].values()) or [0],
                "#d04a4a",
            ),
        }
        per_hour = pg.PlotWidget(title="Judgments per hour (last 24 h)")
        per_hour.setMenuEnabled(False)
        per_hour.hideButtons()
        xs = list(range(len(hours)))
        per_hour.plot(xs, [n for _, n in hours], pen=pg.mkPen("#2a9d5c", width=2), symbol="o", symbolSize=5)
        per_hour.getAxis("bottom").setTicks([[(i, h[11:13] + "h") for i, (h, _) in enumerate(hours) if i % 3 == 0]])
        self.charts["per_hour"] = per_hour
        self.grid.addWidget(per_hour, 0, 0, 1, 2)
        self.grid.addWidget(self.charts["verdicts"], 0, 2)
        self.grid.addWidget(self.charts["strengths"], 1, 0)
        self.grid.addWidget(self.charts["flags"], 1, 1, 1, 2)
