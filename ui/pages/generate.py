"""Generate: sample new candidate responses from any model (base plus optional adapter) for a set of prompts; they
stream into the project as responses with full provenance and as new comparisons in the annotation queue.

Prompts are chosen by tag, by a text filter, or typed in (one per line; they are added to the project as
training prompts first). Sampling settings are the ``GenerateConfig`` fields, with their help as tooltips. The job
runs in a worker process (stage ``generate``); the page shows its progress, and counts the rows it added.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.configs import GenerateConfig
from workbench.errors import InputError
from workbench.jobs.client import Outcome

from ..config_form import ConfigForm
from ..engine_client import EngineRun, run_manager
from ..model_picker import ModelPicker
from .base import Page

SKIP = ("base_model", "adapter_from", "snapshot_id", "prompt_ids", "trust_remote_code", "name", "tag", "split")
MAX_PROMPTS_SHOWN = 200


class GeneratePage(Page):
    name = "generate"
    title = "Generate"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.manager = run_manager(session)
        self.job: EngineRun | None = None
        self.last_outcome: Outcome | None = None
        self._counts_before: tuple[int, int] = (0, 0)

        self.model = ModelPicker("Model")
        self.by_tag = QRadioButton("Prompts with tag")
        self.by_filter = QRadioButton("Prompts whose text contains")
        self.by_new = QRadioButton("New prompts (one per line)")
        self.by_tag.setChecked(True)
        group = QButtonGroup(self)
        for b in (self.by_tag, self.by_filter, self.by_new):
            group.addButton(b)
            b.toggled.connect(lambda _on: self.update_prompts())
        self.tag = QComboBox()
        self.tag.currentIndexChanged.connect(lambda _i: self.update_prompts())
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("e.g. python")
        self.filter.textChanged.connect(lambda _t: self.update_prompts())
        self.split = QComboBox()
        self.split.addItems(["training prompts", "held-out prompts", "both"])
        self.split.currentIndexChanged.connect(lambda _i: self.update_prompts())
        self.new_prompts = QPlainTextEdit()
        self.new_prompts.setPlaceholderText("How do I make a cup of tea?\nExplain recursion to a child.")
        self.new_prompts.setMaximumHeight(90)
        self.new_prompts.textChanged.connect(self.update_prompts)
        self.prompt_info = QLabel()
        self.prompt_info.setWordWrap(True)
        self.form = ConfigForm(GenerateConfig, skip=SKIP)
        self.form.setToolTip("Sampling settings (hover a name for its help)")

        self.start_button = QPushButton("Generate")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.status = QLabel("Choose a model and prompts, then Generate.")
        self.status.setWordWrap(True)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background: #fde2e1; color: #611; padding: 6px; border: 1px solid #e99;")
        self.banner.hide()
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.addWidget(self.model)
        box = QGroupBox("Prompts")
        bl = QVBoxLayout(box)
        row = QHBoxLayout()
        row.addWidget(self.by_tag)
        row.addWidget(self.tag, 1)
        bl.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.by_filter)
        row.addWidget(self.filter, 1)
        bl.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("from"))
        row.addWidget(self.split, 1)
        bl.addLayout(row)
        bl.addWidget(self.by_new)
        bl.addWidget(self.new_prompts)
        bl.addWidget(self.prompt_info)
        ll.addWidget(box)
        box = QGroupBox("Sampling")
        QVBoxLayout(box).addWidget(self.form)
        ll.addWidget(box)
        ll.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(left)
        right = QWidget()
        rl = QVBoxLayout(right)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        rl.addLayout(row)
        rl.addWidget(self.bar)
        rl.addWidget(self.status)
        rl.addWidget(self.banner)
        rl.addWidget(self.log_view, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(scroll)
        split.addWidget(right)
        split.setSizes([460, 700])
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)

    def activate(self) -> None:
        super().activate()
        self.refresh()

    def refresh(self) -> None:
        self.model.fill_adapters(self.project)
        keep = self.tag.currentText()
        self.tag.blockSignals(True)
        self.tag.clear()
        self.tag.addItem("(any tag)", None)
        for tag in self.project.tags():
            self.tag.addItem(tag, tag)
        i = self.tag.findText(keep)
        self.tag.setCurrentIndex(max(0, i))
        self.tag.blockSignals(False)
        self.update_prompts()

    # ------------------------------------------------------------------ prompts
    def _split(self) -> str | None:
        return {0: "train", 1: "heldout"}.get(self.split.currentIndex())

    def selected_prompt_ids(self) -> list[int]:
        """The prompts the current choice covers (typed prompts are not in the project yet: none)."""
        p = self.project
        if self.by_new.isChecked():
            return []
        split = self._split()
        if self.by_tag.isChecked():
            return p.prompt_ids(split=split, tag=self.tag.currentData())
        return p.prompt_ids_with_title(self.filter.text().strip(), split=split)

    def typed_prompts(self) -> list[str]:
        return [ln.strip() for ln in self.new_prompts.toPlainText().splitlines() if ln.strip()]

    def update_prompts(self) -> None:
        if self.by_new.isChecked():
            n = len(self.typed_prompts())
            self.prompt_info.setText(f"{n} new prompt(s) will be added to the project (training split).")
        else:
            n = len(self.selected_prompt_ids())
            self.prompt_info.setText(f"{n:,} prompt(s) selected.")
        self.start_button.setEnabled(n > 0 and self.job is None)

    # ------------------------------------------------------------------ running
    def build_config(self, prompt_ids: list[int]) -> GenerateConfig:
        base, adapter = self.model.value()
        return self.form.config(base_model=base, adapter_from=adapter, prompt_ids=prompt_ids, snapshot_id=None,
                                name="generate")  # type: ignore[return-value]

    def start(self) -> bool:
        self.banner.hide()
        try:
            self.build_config([1])  # validate the settings before touching the project
        except InputError as e:
            self.form.mark_error(e.field)
            self._fail(str(e))
            return False
        self.form.mark_error(None)
        if self.by_new.isChecked():
            ids = []
            with self.project.transaction():
                for text in self.typed_prompts():
                    pid, _ = self.project.add_prompt([{"role": "user", "content": text}], source="typed")
                    ids.append(pid)
            self.session.notify(prompts=len(ids))
        else:
            ids = self.selected_prompt_ids()
        if not ids:
            self._fail("no prompts selected")
            return False
        cfg = self.build_config(ids)
        self._counts_before = self._counts()
        self.job = self.manager.job("generate", cfg)
        self.job.progress.connect(self._on_progress)
        self.job.log.connect(lambda level, msg: self.log_view.appendPlainText(f"[{level}] {msg}"))
        self.job.finished_run.connect(self._on_finished)
        self.job.started_run.connect(lambda rid, d: self.status.setText(f"Generating (run {rid}) for {len(ids)} prompt(s)…"))
        self.job.start()
        self.bar.setRange(0, 0)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Starting the worker for {len(ids)} prompt(s)…")
        return True

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _counts(self) -> tuple[int, int]:
        s = self.project.stats()
        return s["responses"], s["pending"]

    def _on_progress(self, p: dict) -> None:
        total = int(p.get("total") or 0)
        if total:
            self.bar.setRange(0, total)
            self.bar.setValue(int(p.get("step") or 0))
        responses, pending = self._counts()
        self.status.setText(f"{responses - self._counts_before[0]} new response(s), "
                            f"{pending - self._counts_before[1]} new comparison(s) so far")

    def _on_finished(self, outcome: Outcome) -> None:
        if not self.project.is_open:
            return  # the project was closed while the run ended
        self.last_outcome = outcome
        self.job = None
        self.bar.setRange(0, 1)
        self.bar.setValue(1 if outcome.ok else 0)
        self.cancel_button.setEnabled(False)
        responses, pending = self._counts()
        added = (f"{responses - self._counts_before[0]} new response(s) and {pending - self._counts_before[1]} "
                 "new comparison(s) in the queue")
        if outcome.status == "failed":
            self._fail(outcome.error or "generation failed", outcome.log_tail)
            self.status.setText(f"Generation failed; {added}.")
        else:
            self.status.setText(f"Generation {outcome.status}: {added}.")
        self.session.notify(responses=responses - self._counts_before[0], pending=pending - self._counts_before[1])
        self.update_prompts()

    def _fail(self, message: str, tail: str = "") -> None:
        self.banner.setText(f"<b>Generation failed:</b> {message}")
        self.banner.show()
        if tail:
            self.log_view.appendPlainText("---- log ----\n" + tail)
