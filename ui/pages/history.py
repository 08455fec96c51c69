"""History: every past judgment, ranking, demonstration and flag, searchable and filterable (text, kind, verdict,
tag, date); open one to read it, change a verdict, or retract it (Delete twice).

The list is a lazy model (:class:`HistoryModel`): it holds the pages read so far and asks the store for the next one
(keyset pagination) only when the view scrolls near its end, so the page opens at once on a million judgments and
nothing counts the whole table. Edits apply to the item on screen (:attr:`HistoryPage.shown`, the one in the detail
pane), never to whatever row a reload leaves highlighted; the list is updated in place and the highlight follows
that item. Verdicts are told from the expert's point of view (left, right); harmful content is folded as on Compare.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QDate, QModelIndex, Qt, QTimer
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
    QSizePolicy,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from workbench.queue import tags
from workbench.sides import STRENGTH_WORDS, screen_side, screen_verdict, stored_verdict, verdict_phrase
from workbench.store import HISTORY_KINDS, HistoryRow

from ..folding import FoldedItem, ReadingKeys
from ..render import TextPane
from ..widgets import LazyCombo, conversation_markdown
from .base import Page

COLUMNS = ("When", "Kind", "Id", "Prompt", "What")
PAGE_ROWS = 200
# The verdicts as the expert gives them (screen words), for the filter and the change box.
SCREEN_VERDICTS = (("left", "left better"), ("right", "right better"), ("tie", "tie"), ("both_bad", "both bad"))


class HistoryModel(QAbstractTableModel):
    """The History list, read from the store a page at a time (Qt's canFetchMore/fetchMore)."""

    def __init__(self, project, parent=None):
        super().__init__(parent)
        self.project = project
        self.filters: dict[str, Any] = {}
        self.rows: list[HistoryRow] = []
        self.exhausted = True

    # ------------------------------------------------------------------ loading
    def reset(self, filters: dict[str, Any]) -> None:
        """Start over with new filters: drop every row read so far and read the first page."""
        self.beginResetModel()
        self.filters = filters
        self.rows = []
        self.exhausted = False
        self.endResetModel()
        self.fetchMore(QModelIndex())

    def canFetchMore(self, parent=QModelIndex()) -> bool:  # noqa: N802 (Qt's name)
        return not parent.isValid() and not self.exhausted

    def fetchMore(self, parent=QModelIndex()) -> None:  # noqa: N802 (Qt's name)
        if parent.isValid() or self.exhausted:
            return
        after = self.rows[-1].cursor if self.rows else None
        page = self.project.history(**self.filters, after=after, limit=PAGE_ROWS)
        self.exhausted = len(page) < PAGE_ROWS
        if page:
            self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(page) - 1)
            self.rows.extend(page)
            self.endInsertRows()

    # ------------------------------------------------------------------ edits in place
    def row_of(self, kind: str, item_id: int) -> int | None:
        return next((i for i, r in enumerate(self.rows) if r.kind == kind and r.id == item_id), None)

    def replace(self, i: int, row: HistoryRow) -> None:
        self.rows[i] = row
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))

    def remove(self, i: int) -> None:
        self.beginRemoveRows(QModelIndex(), i, i)
        del self.rows[i]
        self.endRemoveRows()

    def put_first(self, row: HistoryRow) -> None:
        """A row just judged again is the newest: it goes to the top (the pages read later are all older)."""
        old = self.row_of(row.kind, row.id)
        if old is not None:
            self.remove(old)
        self.beginInsertRows(QModelIndex(), 0, 0)
        self.rows.insert(0, row)
        self.endInsertRows()

    # ------------------------------------------------------------------ the table
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt's name)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt's name)
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 (Qt's name)
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            col = index.column()
            if col == 0:
                return r.when[:19].replace("T", " ")
            if col == 1:
                return r.kind
            if col == 2:
                return str(r.id)
            if col == 3:
                return r.title[:200]
            return r.detail + (" · retracted" if r.retracted else "")
        if role == Qt.ItemDataRole.ForegroundRole and r.retracted:
            return Qt.GlobalColor.gray
        return None


class HistoryPage(ReadingKeys, Page):
    name = "history"
    title = "History"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.shown: HistoryRow | None = None   # the item in the detail pane: every edit applies to it
        self._delete_armed: tuple[str, int, float] | None = None
        self.fold = FoldedItem(session)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search prompts, notes and answers (Ctrl+F)")
        self.kind_box = QComboBox()
        self.kind_box.addItem("everything", None)
        for k in HISTORY_KINDS:
            self.kind_box.addItem(k, k)
        self.verdict_box = QComboBox()
        self.verdict_box.addItem("any verdict", None)
        for v, label in SCREEN_VERDICTS:
            self.verdict_box.addItem(label, v)
        self.tag_box = LazyCombo("any tag", lambda: tags(self.project))
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

        self.model = HistoryModel(self.project, self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        # Fixed row heights and column widths: measuring every row's contents would read them all.
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        width = self.table.fontMetrics().horizontalAdvance
        for col, w in ((0, width("2026-12-31 23:59:59") + 12), (1, width("demonstration") + 12), (2, width("000000") + 8),
                       (3, 200)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, w)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)  # the verdict, in words, gets the room left
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self.open_selected())
        self.table.doubleClicked.connect(lambda *_: self.open_selected())

        self.detail_head = QLabel()
        self.detail_head.setWordWrap(True)
        self.detail = TextPane()
        self.detail.browser.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.detail.reveal_requested.connect(lambda: self.router.trigger("reveal"))
        self.verdict_edit = QComboBox()
        for v, label in SCREEN_VERDICTS:
            self.verdict_edit.addItem(label, v)
        self.strength_edit = QComboBox()
        for s, words in STRENGTH_WORDS.items():
            self.strength_edit.addItem(words, s)
        self.verdict_edit.currentIndexChanged.connect(
            lambda *_: self.strength_edit.setEnabled(self.verdict_edit.currentData() in ("left", "right")))
        self.change_btn = QPushButton("Change verdict")
        self.change_btn.clicked.connect(self.change_selected)
        self.retract_btn = QPushButton("Retract (Delete twice)")
        self.retract_btn.clicked.connect(lambda: self.retract_selected(confirm=True))
        edit_row = QHBoxLayout()
        edit_row.setContentsMargins(0, 0, 0, 0)
        for w in (self.verdict_edit, self.strength_edit, self.change_btn):
            edit_row.addWidget(w)
        self.verdict_row = QWidget()
        self.verdict_row.setLayout(edit_row)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        head_row = QHBoxLayout()
        head_row.addWidget(self.detail_head, 1)
        head_row.addWidget(self.detail.plain_button)
        rv.addLayout(head_row)
        rv.addWidget(self.detail, 1)
        rv.addWidget(self.verdict_row)
        rv.addWidget(self.retract_btn)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.feedback = QLabel()
        self.feedback.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.count_label = QLabel()
        self.count_label.setStyleSheet("color: gray;")
        self.model.rowsInserted.connect(lambda *_: self._count())
        self.model.rowsRemoved.connect(lambda *_: self._count())
        bottom = QHBoxLayout()
        bottom.addWidget(self.feedback, 1)
        bottom.addWidget(self.count_label)
        lay = QVBoxLayout(self)
        lay.addLayout(filters)
        lay.addWidget(split, 1)
        lay.addLayout(bottom)
        self._show_detail(None)

    def activate(self) -> None:
        self.reload()
        self.table.setFocus()

    # ------------------------------------------------------------------ the list
    def filters(self) -> dict[str, Any]:
        dates = {}
        if self.use_dates.isChecked():
            dates = {
                "date_from": self.date_from.date().toString("yyyy-MM-dd"),
                "date_to": self.date_to.date().addDays(1).toString("yyyy-MM-dd"),
            }
        return {
            "kind": self.kind_box.currentData(),
            "text": self.search.text().strip(),
            "verdict": self.verdict_box.currentData(),
            "tag": self.tag_box.currentData(),
            **dates,
        }

    def reload(self) -> None:
        """Read the list afresh (first page only) with the filters; the detail pane keeps the item on screen."""
        self.model.reset(self.filters())
        self._select_shown()
        self._count()

    @property
    def rows(self) -> list[HistoryRow]:
        """The rows read so far."""
        return self.model.rows

    def _count(self) -> None:
        """How many rows are read so far (never a count of the whole table)."""
        n = len(self.model.rows)
        self.count_label.setText(f"{n:,} item(s)" + ("" if self.model.exhausted else " so far, more as you scroll"))

    def _select_shown(self) -> None:
        """Highlight the row of the item on screen (or nothing, when it is not in the rows read)."""
        selection = self.table.selectionModel()
        i = self.model.row_of(self.shown.kind, self.shown.id) if self.shown is not None else None
        selection.blockSignals(True)
        try:
            selection.clearSelection()
            if i is None:
                selection.setCurrentIndex(QModelIndex(), selection.SelectionFlag.NoUpdate)
            else:
                index = self.model.index(i, 0)
                selection.setCurrentIndex(index, selection.SelectionFlag.ClearAndSelect | selection.SelectionFlag.Rows)
                self.table.scrollTo(index)
        finally:
            selection.blockSignals(False)
        self.table.viewport().update()

    def selected(self) -> HistoryRow | None:
        """The highlighted row, if any (what Enter or a click opens)."""
        index = self.table.selectionModel().currentIndex()
        return self.model.rows[index.row()] if index.isValid() and index.row() < len(self.model.rows) else None

    def open_selected(self, *_: object) -> None:
        row = self.selected()
        if row is not None:
            self._show_detail(row)

    # ------------------------------------------------------------------ the item on screen
    def _show_detail(self, r: HistoryRow | None) -> None:
        self.shown = r
        self._delete_armed = None
        if r is None:
            self.fold.start(None)
            self.detail_head.setText("Pick an item in the list to read it here.")
            self.detail.set_text("", markdown=False)
            self.verdict_row.hide()
            self.retract_btn.hide()
            return
        p = self.project
        prompt = p.get_prompt(r.prompt_id)
        md = [conversation_markdown(prompt.messages), "---"]
        flags: list[tuple] = list(p.flags_for_prompt(r.prompt_id))
        if r.kind == "comparison":
            c = p.get_comparison(r.id)
            said = screen_verdict(c.verdict, c.left_side)
            for side in ("left", "right"):
                rid = c.response_a if screen_side("a", c.left_side) == side else c.response_b
                flags += p.flags_for_response(rid)
                mark = f" — preferred ({STRENGTH_WORDS.get(c.strength or '', 'better')})" if said == side else ""
                md.append(f"**{side.capitalize()}** (response #{rid}){mark}:\n\n{p.get_response(rid).content}")
            shown = "" if c.left_side else " (not shown side by side: imported, or your own answer against a response)"
            criteria = ", ".join(f"{k} {screen_verdict(v, c.left_side)}" for k, v in (c.criteria or {}).items()) or "–"
            md.append(f"**Verdict:** {verdict_phrase(c.verdict, c.strength, c.left_side)}{shown} · criteria: {criteria}"
                      f" · note: {c.note or '–'}")
            self.verdict_edit.setCurrentIndex(self.verdict_edit.findData(said))
            self.strength_edit.setCurrentIndex(max(0, self.strength_edit.findData(c.strength)))
        elif r.kind == "ranking":
            for rid, rank in p.get_ranking(r.id).items():
                flags += p.flags_for_response(rid)
                md.append(f"**Rank {rank}** (response #{rid}):\n\n{p.get_response(rid).content}")
        elif r.kind == "demonstration":
            rid = p.demonstration_response_id(r.id)
            md.append(f"**Demonstration:**\n\n{p.get_response(rid).content}")
        else:
            flag = p.get_flag(r.id)
            if flag.response_id:
                flags += p.flags_for_response(flag.response_id)
                md.append(f"**Flagged response** (#{flag.response_id}):\n\n{p.get_response(flag.response_id).content}")
            severity = flag.severity if flag.present else "checked, absent"
            md.append(f"**Flag:** {flag.category} · {severity} · note: {flag.note or '–'}")
        state = " · retracted" if r.retracted else ""
        self.detail_head.setText(f"<b>{r.kind.capitalize()} {r.id}</b> · {r.when[:19].replace('T', ' ')}{state}")
        self.fold.start((r.kind, r.id))
        self.fold.show(self.detail, "\n\n".join(md), prompt_tags=prompt.tags, flags=flags, markdown=True)
        self.verdict_row.setVisible(r.kind == "comparison" and not r.retracted)
        self.retract_btn.setVisible(not r.retracted)

    def change_selected(self) -> None:
        """Change the verdict of the comparison on screen to the one in the boxes (in screen words)."""
        r = self.shown
        if r is None or r.kind != "comparison" or r.retracted:
            return
        if self.fold.folded:
            self.refuse("Reveal the hidden content first (R): a verdict needs both responses seen.")
            return
        c = self.project.get_comparison(r.id)
        said = self.verdict_edit.currentData()
        strength = self.strength_edit.currentData() if said in ("left", "right") else None
        new_id = self.project.change_verdict(r.id, stored_verdict(said, c.left_side), strength)
        if new_id != r.id:  # the old judgment stays, marked retracted, for the runs that used it
            i = self.model.row_of(r.kind, r.id)
            old = self.project.history_item(r.kind, r.id)
            if i is not None and old is not None:
                self.model.replace(i, old)
        row = self.project.history_item("comparison", new_id)
        self.model.put_first(row)
        self.session.refresh.emit()
        self._show_detail(row)
        self._select_shown()
        self.feedback.setText(f"Comparison {r.id}: now {verdict_phrase(row.verdict, row.strength, row.left_side)}"
                              + (f" (as #{new_id}; #{r.id} is kept, retracted)" if new_id != r.id else "") + ".")

    def retract_selected(self, confirm: bool = False) -> str | None:
        """Retract the item on screen (Delete twice, or the button). One held by a snapshot (or a retest) is kept and
        marked retracted; any other is deleted."""
        r = self.shown
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
        i = self.model.row_of(r.kind, r.id)
        if how == "retracted":
            row = self.project.history_item(r.kind, r.id)
            if i is not None:
                self.model.replace(i, row)
            self._show_detail(row)
            self._select_shown()
            why = "kept and marked, because a training snapshot or a retest refers to it"
        else:
            if i is not None:
                self.model.remove(i)
            self._show_detail(None)
            self._select_shown()
            why = "deleted: nothing referred to it"
        self.feedback.setText(f"{r.kind.capitalize()} {r.id} retracted ({why}).")
        self.session.refresh.emit()
        return how

    # ------------------------------------------------------------------ keys
    def act_focus_search(self, _k: str) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def act_open_selected(self, _k: str) -> None:
        self.open_selected()

    def act_retract_selected(self, _k: str) -> None:
        self.retract_selected()
