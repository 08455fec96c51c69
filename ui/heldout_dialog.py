"""Project → Held-out prompts…: which prompts are held out (never trained on; blind rounds and the harmful-output rate
use them). A searchable list of the prompts with their split: hold the selected ones out or return them to
training, or hold out a random share of the training prompts drawn with a seed (:mod:`workbench.splits`).

A prompt a training run already used stays in training unless the expert confirms moving it anyway: the dialog says
how many were left, as the core reports it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from workbench.splits import SplitChange, back_to_training, hold_out, hold_out_share
from workbench.store import Project

MAX_ROWS = 500
SPLIT_TEXT = {"train": "training", "heldout": "held out"}


class HeldOutDialog(QDialog):
    changed = Signal()  # prompts changed split: counts elsewhere need a refresh

    def __init__(self, project: Project, parent: QWidget | None = None):
        super().__init__(parent)
        self.project = project
        self.setWindowTitle("Held-out prompts")
        self.setObjectName("heldOutDialog")
        self.resize(860, 560)
        self.search = QLineEdit()
        self.search.setPlaceholderText("search the prompts' text")
        self.search.textChanged.connect(lambda _t: self.refresh())
        self.split = QComboBox()
        self.split.addItem("every prompt", None)
        self.split.addItem("training prompts", "train")
        self.split.addItem("held-out prompts", "heldout")
        self.split.currentIndexChanged.connect(lambda _i: self.refresh())
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Prompt", "Split", "Source", "Text"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.hold_button = QPushButton("Hold out the selected")
        self.hold_button.clicked.connect(self.hold_out_selected)
        self.back_button = QPushButton("Back to training")
        self.back_button.clicked.connect(self.back_to_training_selected)
        self.share = QSpinBox()
        self.share.setRange(1, 90)
        self.share.setValue(10)
        self.share.setSuffix(" %")
        self.seed = QSpinBox()
        self.seed.setRange(0, 1_000_000)
        self.seed.setPrefix("seed ")
        self.share_button = QPushButton("Hold out a random share of the training prompts")
        self.share_button.clicked.connect(self.hold_out_share)
        self.counts = QLabel()
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setObjectName("note")
        for b in (self.hold_button, self.back_button, self.share_button):
            b.setEnabled(not project.read_only)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.split)
        row = QHBoxLayout()
        row.addWidget(self.hold_button)
        row.addWidget(self.back_button)
        row.addStretch(1)
        row.addWidget(self.share)
        row.addWidget(self.seed)
        row.addWidget(self.share_button)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Held-out prompts never enter a training snapshot; the blind evaluation and the "
                             "harmful-output rate use them."))
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.counts)
        lay.addLayout(row)
        lay.addWidget(self.note)
        self.refresh()

    def refresh(self) -> None:
        rows = self.project.prompt_rows(text=self.search.text().strip(), split=self.split.currentData(), limit=MAX_ROWS)
        self.table.setRowCount(len(rows))
        for r, (pid, split, source, title) in enumerate(rows):
            for c, text in enumerate((str(pid), SPLIT_TEXT.get(split, split), source, " ".join(title.split())[:200])):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, pid)
                self.table.setItem(r, c, item)
        held, total = self.project.prompt_count("heldout"), self.project.prompt_count()
        shown = f"showing the first {MAX_ROWS}" if len(rows) == MAX_ROWS else f"{len(rows)} shown"
        self.counts.setText(f"{held:,} of {total:,} prompts held out · {shown}")

    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in rows]

    def select_ids(self, ids: list[int]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) in ids:
                self.table.selectRow(r)
        self.table.setSelectionMode(mode)

    def _report(self, change: SplitChange, to: str) -> None:
        self.note.setText(change.text(to))
        self.refresh()
        self.changed.emit()

    def hold_out_selected(self, *, confirm=None) -> SplitChange | None:
        """Hold out the selected prompts; those a training run used are moved only if the expert confirms
        (``confirm``: a function answering the question, for tests; none: ask)."""
        ids = self.selected_ids()
        if not ids:
            return None
        change = hold_out(self.project, ids)
        if change.trained:
            ask = confirm or self._ask_trained
            if ask(change.trained):
                change = SplitChange(change.moved + hold_out(self.project, ids, include_trained=True).moved,
                                     change.trained, True)
        self._report(change, "held out")
        return change

    def _ask_trained(self, n: int) -> bool:
        answer = QMessageBox.question(
            self, "Prompts already trained on",
            f"{n} of the selected prompts were used by a training run, so a model has seen them: an evaluation on "
            "them looks better than it is. Hold them out anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def back_to_training_selected(self) -> SplitChange | None:
        ids = self.selected_ids()
        if not ids:
            return None
        change = back_to_training(self.project, ids)
        self._report(change, "in training")
        return change

    def hold_out_share(self) -> SplitChange:
        change = hold_out_share(self.project, self.share.value() / 100, seed=self.seed.value())
        self._report(change, "held out")
        return change
