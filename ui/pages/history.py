"""History: every past judgment, ranking, demonstration and flag, searchable and filterable (text, kind,
verdict, tag, date); open one to read it, change a verdict, or retract it (Delete twice)."""

from __future__ import annotations

import time

from PySide6.QtCore import QDate, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from workbench.queue import tags
from workbench.taxonomy import STRENGTHS, VERDICTS

from workbench.store import HISTORY_KINDS, HistoryRow
from ..render import SafeBrowser
from ..widgets import conversation_markdown
from .base import Page

COLUMNS = ("When", "Kind", "Id", "Prompt", "Detail")


class HistoryPage(Page):
    name = "history"
    title = "History"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.rows: list[HistoryRow] = []
        self._delete_armed: tuple[str, int, float] | None = None
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search prompts, notes and answers (Ctrl+F)")
        self.kind_box = QComboBox()
        self.kind_box.addItem("everything", None)
        for k in HISTORY_KINDS:
            self.kind_box.addItem(k, k)
        self.verdict_box = QComboBox()
        self.verdict_box.addItem("any verdict", None)
        for v in VERDICTS:
            self.verdict_box.addItem(v.replace("_", " "), v)
        self.tag_box = QComboBox()
        self.use_dates = QCheckBox("from")
        self.date_from = QDateEdit(QDate.currentDate().addDays(-7))
        self.date_to = QDateEdit(QDate.currentDate())
        for d in (self.date_from, self.date_to):
            d.setCalendarPopup(True)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(200)
        self._debounce.timeout.connect(self.reload)
        self.search.textChanged.connect(self._debounce.start)
        for box in (self.kind_box, self.verdict_box, self.tag_box):
            box.currentIndexChanged.connect(self.reload)
        self.use_dates.toggled.connect(self.reload)
        self.date_from.dateChanged.connect(self.reload)
        self.date_to.dateChanged.connect(self.reload)
        filters = QHBoxLayout()
        filters.addWidget(self.search, 2)
        for w in (self.kind_box, self.verdict_box, self.tag_box, self.use_dates, self.date_from, QLabel("to"), self.date_to):
            filters.addWidget(w)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        for col in (0, 1, 2):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(4, 220)
        self.table.itemSelectionChanged.connect(self.open_selected)
        self.table.doubleClicked.connect(lambda *_: self.open_selected())

        self.detail = SafeBrowser()
        self.verdict_edit = QComboBox()
        for v in VERDICTS:
            self.verdict_edit.addItem(v.replace("_", " "), v)
        self.strength_edit = QComboBox()
        self.strength_edit.addItem("no strength", None)
        for s in STRENGTHS:
            self.strength_edit.addItem(s, s)
        self.change_btn = QPushButton("Change verdict")
        self.change_btn.clicked.connect(self.change_selected)
        self.retract_btn = QPushButton("Retract (Delete twice)")
        self.retract_btn.clicked.connect(lambda: self.retract_selected(confirm=True))
        edit_row = QHBoxLayout()
        for w in (self.verdict_edit, self.strength_edit, self.change_btn):
            edit_row.addWidget(w)
        self.verdict_row = QWidget()
        self.verdict_row.setLayout(edit_row)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(self.detail, 1)
        rv.addWidget(self.verdict_row)
        rv.addWidget(self.retract_btn)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.feedback = QLabel()
        lay = QVBoxLayout(self)
        lay.addLayout(filters)
        lay.addWidget(split, 1)
        lay.addWidget(self.feedback)
        self.verdict_row.hide()
        self.retract_btn.hide()
        self._filled = False

    def activate(self) -> None:
        if not self._filled:
            self._filled = True
            self.tag_box.blockSignals(True)
            self.tag_box.addItem("any tag", None)
            for t in tags(self.project):
                self.tag_box.addItem(t, t)
            self.tag_box.blockSignals(False)
        self.reload()
        self.table.setFocus()

    def reload(self) -> None:
        dates = {}
        if self.use_dates.isChecked():
            dates = {
                "date_from": self.date_from.date().toString("yyyy-MM-dd"),
                "date_to": self.date_to.date().addDays(1).toString("yyyy-MM-dd"),
            }
        self.rows = self.project.history(
            kind=self.kind_box.currentData(),
            text=self.search.text().strip(),
            verdict=self.verdict_box.currentData(),
            tag=self.tag_box.currentData(),
            **dates,
        )
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            values = (r.when[:19].replace("T", " "), r.kind, str(r.id), r.title[:200], r.detail + (" · retracted" if r.retracted else ""))
            for j, v in enumerate(values):
                item = QTableWidgetItem(v)
                if r.retracted:
                    item.setForeground(Qt.GlobalColor.gray)
                self.table.setItem(i, j, item)
        self.feedback.setText(f"{len(self.rows)} item(s)" + (" (newest 500)" if len(self.rows) >= 500 else ""))

    def selected(self) -> HistoryRow | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.rows[rows[0].row()] if rows else None

    def open_selected(self, *_: object) -> None:
        r = self.selected()
        if r is None:
            self.verdict_row.hide()
            self.retract_btn.hide()
            return
        p = self.project
        prompt = p.get_prompt(r.prompt_id)
        md = [conversation_markdown(prompt.messages), "---"]
        if r.kind == "comparison":
            c = p.get_comparison(r.id)
            for label, rid in (("Response A", c.response_a), ("Response B", c.response_b)):
                md.append(f"**{label}** (#{rid}):\n\n{p.get_response(rid).content}")
            md.append(f"**Verdict:** {c.verdict} {c.strength or ''} · shown left: {c.left_side} · criteria: {c.criteria or '–'} · note: {c.note or '–'}")
            self.verdict_edit.setCurrentIndex(self.verdict_edit.findData(c.verdict))
            self.strength_edit.setCurrentIndex(self.strength_edit.findData(c.strength))
        elif r.kind == "ranking":
            for rid, rank in p.get_ranking(r.id).items():
                md.append(f"**Rank {rank}** (#{rid}):\n\n{p.get_response(rid).content}")
        elif r.kind == "demonstration":
            rid = p.demonstration_response_id(r.id)
            md.append(f"**Demonstration:**\n\n{p.get_response(rid).content}")
        else:
            flag = p.get_flag(r.id)
            if flag.response_id:
                md.append(f"**Flagged response** (#{flag.response_id}):\n\n{p.get_response(flag.response_id).content}")
            md.append(f"**Flag:** {flag.category} · {flag.severity} · note: {flag.note or '–'}")
        self.detail.set_content("\n\n".join(md), markdown=True)
        self.verdict_row.setVisible(r.kind == "comparison" and not r.retracted)
        self.retract_btn.setVisible(not r.retracted)

    def change_selected(self) -> None:
        r = self.selected()
        if r is None or r.kind != "comparison":
            return
        verdict = self.verdict_edit.currentData()
        strength = self.strength_edit.currentData() if verdict in ("a", "b") else None
        new_id = self.project.change_verdict(r.id, verdict, strength)
        self.feedback.setText(f"Comparison {r.id}: verdict now {verdict} {strength or ''}" + (f" (as #{new_id})" if new_id != r.id else ""))
        self.session.refresh.emit()
        self.reload()

    def retract_selected(self, confirm: bool = False) -> str | None:
        r = self.selected()
        if r is None or r.retracted:
            return None
        now = time.monotonic()
        armed = self._delete_armed
        if not confirm and not (armed and armed[:2] == (r.kind, r.id) and now - armed[2] < 5):
            self._delete_armed = (r.kind, r.id, now)
            self.feedback.setText(f"Press Delete again to retract {r.kind} {r.id}.")
            return None
        self._delete_armed = None
        how = self.project.retract(r.kind, r.id)
        self.feedback.setText(f"{r.kind.capitalize()} {r.id} {how}.")
        self.session.refresh.emit()
        self.reload()
        return how

    # ------------------------------------------------------------------ keys
    def act_focus_search(self, _k: str) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def act_open_selected(self, _k: str) -> None:
        self.open_selected()

    def act_retract_selected(self, _k: str) -> None:
        self.retract_selected()
