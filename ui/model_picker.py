"""A compact model chooser for the Generate, Playground and Evaluation pages: a base model (bundled default, hub
id, folder or GGUF file) and an optional LoRA adapter (a finished run's output, or any adapter folder)."""

from __future__ import annotations

import os

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QGridLayout, QLabel, QLineEdit, QPushButton, QWidget

from workbench.paths import BUNDLED_MODEL_REF
from workbench.store import Project
from workbench.train_checks import done_runs

BASE_KINDS = ("Bundled default (SmolLM2-135M-Instruct)", "Hub id (local cache)", "Folder", "GGUF file")


class ModelPicker(QWidget):
    changed = Signal()

    def __init__(self, title: str = "Model", parent: QWidget | None = None):
        super().__init__(parent)
        self.kind = QComboBox()
        self.kind.addItems(list(BASE_KINDS))
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.base = QLineEdit(BUNDLED_MODEL_REF)
        self.base.textChanged.connect(self.changed)
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse)
        self.adapter_box = QComboBox()
        self.adapter_box.currentIndexChanged.connect(self._adapter_choice)
        self.adapter = QLineEdit()
        self.adapter.setPlaceholderText("no adapter: the base model alone")
        self.adapter.textChanged.connect(self.changed)
        g = QGridLayout(self)
        g.setContentsMargins(0, 0, 0, 0)
        g.addWidget(QLabel(f"<b>{title}</b>"), 0, 0, 1, 3)
        g.addWidget(self.kind, 1, 0, 1, 3)
        g.addWidget(self.base, 2, 0, 1, 2)
        g.addWidget(self.browse, 2, 2)
        g.addWidget(QLabel("Adapter"), 3, 0)
        g.addWidget(self.adapter_box, 3, 1, 1, 2)
        g.addWidget(self.adapter, 4, 0, 1, 3)
        self._kind_changed(0)

    def fill_adapters(self, project: Project) -> None:
        keep = self.adapter.text()
        self.adapter_box.blockSignals(True)
        self.adapter_box.clear()
        self.adapter_box.addItem("None", "")
        for r in done_runs(project):
            if r["stage"] in ("sft", "dpo", "ppo"):
                self.adapter_box.addItem(f"run {r['id']} · {r['stage']} {r['name'] or ''}".strip(), r["adapter"])
        self.adapter_box.addItem("Another folder…", None)
        self.adapter_box.blockSignals(False)
        self.adapter.setText(keep)

    def _kind_changed(self, index: int) -> None:
        self.base.setEnabled(index != 0)
        self.browse.setEnabled(index in (2, 3))
        if index == 0:
            self.base.setText(BUNDLED_MODEL_REF)
        elif self.base.text() == BUNDLED_MODEL_REF:
            self.base.clear()

    def _browse(self) -> None:
        if self.kind.currentIndex() == 2:
            path = QFileDialog.getExistingDirectory(self, "Model folder")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "GGUF model", "", "GGUF files (*.gguf)")
        if path:
            self.base.setText(path)

    def _adapter_choice(self, _i: int) -> None:
        data = self.adapter_box.currentData()
        if data is None:
            data = QFileDialog.getExistingDirectory(self, "LoRA adapter folder") or ""
        self.adapter.setText(data)

    # ------------------------------------------------------------------ values
    def set_model(self, base: str, adapter: str | None = None) -> None:
        if base == BUNDLED_MODEL_REF:
            self.kind.setCurrentIndex(0)
        else:
            self.kind.setCurrentIndex(3 if base.endswith(".gguf") else 2 if os.path.isdir(base) else 1)
            self.base.setText(base)
        self.adapter.setText(adapter or "")

    def value(self) -> tuple[str, str | None]:
        return (self.base.text().strip() or BUNDLED_MODEL_REF, self.adapter.text().strip() or None)

    def label(self) -> str:
        base, adapter = self.value()
        short = base.split(":", 1)[1] if base.startswith("bundled:") else os.path.basename(base.rstrip("/")) or base
        return f"{short} + {os.path.basename(os.path.dirname(adapter.rstrip('/')))}/{os.path.basename(adapter.rstrip('/'))}" \
            if adapter else short
