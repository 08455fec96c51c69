"""Choosing models without typing paths.

- :class:`RunPicker`: the project's finished runs that can serve one role (a reward model, a safety classifier, a
  tuned adapter), each with its name, date and headline figure (:mod:`workbench.run_choices`), plus "None" where
  the setting is optional and "A folder…" for anything else. Used wherever a model folder is asked for: the Train
  page's starting adapter, reward model, safety classifier and reference, the Evaluation page's reward model and
  safety classifier, and the adapter of :class:`ModelPicker`.
- :class:`ModelPicker`: a base model (bundled default, hub id, folder or GGUF file) and an optional adapter, for the
  Generate, Playground and Evaluation pages. Picking a run's adapter also picks the base it was trained on.
"""

from __future__ import annotations

import os

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from workbench.paths import BUNDLED_MODEL_REF
from workbench.reward_scores import normal_path
from workbench.run_choices import RunChoice, run_choices
from workbench.store import Project

BASE_KINDS = ("Bundled default (SmolLM2-135M-Instruct)", "Hub id (local cache)", "Folder", "GGUF file")
_BROWSE = "A folder…"
_FOLDER_PREFIX = "Folder: "


class RunPicker(QWidget):
    """A drop-down of finished runs for ``role`` (see :data:`workbench.run_choices.ROLE_STAGES`); ``none_text``
    names the empty choice (None: no empty choice). :meth:`folder` is what goes into a config."""

    changed = Signal()

    def __init__(self, role: str, *, none_text: str | None = "None", parent: QWidget | None = None):
        super().__init__(parent)
        self.role = role
        self.none_text = none_text
        self.choices: list[RunChoice] = []
        self.combo = QComboBox()
        self.combo.setObjectName(f"runPicker_{role}")
        self.combo.setMinimumContentsLength(24)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.activated.connect(self._activated)
        self.combo.currentIndexChanged.connect(self._index_changed)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo, 1)
        self._fill([], None)

    # ------------------------------------------------------------------ filling
    def fill(self, project: Project, *, keep: bool = True) -> None:
        """List the project's runs again; the choice made stays (a folder no run made stays as a folder)."""
        current = self.folder() if keep else None
        self._fill(run_choices(project, self.role), current)

    def _fill(self, choices: list[RunChoice], folder: str | None) -> None:
        self.choices = choices
        self.combo.blockSignals(True)
        self.combo.clear()
        if self.none_text is not None:
            self.combo.addItem(self.none_text, "")
        for c in choices:
            self.combo.addItem(c.label, c.folder)
            self.combo.setItemData(self.combo.count() - 1, c.folder, 3)  # the tooltip: the folder
        self.combo.addItem(_BROWSE, None)
        self.combo.blockSignals(False)
        self.set_folder(folder, quiet=True)

    # ------------------------------------------------------------------ values
    def folder(self) -> str | None:
        data = self.combo.currentData()
        return data or None

    def choice(self) -> RunChoice | None:
        """The run chosen (None: the empty choice or a folder no finished run made)."""
        folder = self.folder()
        return next((c for c in self.choices if folder and c.folder == folder), None)

    def set_folder(self, folder: str | None, *, quiet: bool = False) -> None:
        """Choose ``folder``: its run when a listed run made it, else a "Folder: …" entry; None or empty: the empty
        choice (or the newest run when there is no empty choice)."""
        self.combo.blockSignals(True)
        try:
            if not folder:
                self.combo.setCurrentIndex(0)
                return
            norm = normal_path(folder)
            for i in range(self.combo.count()):
                data = self.combo.itemData(i)
                if data and normal_path(data) == norm:
                    self.combo.setCurrentIndex(i)
                    return
            for i in range(self.combo.count()):  # one folder entry at most
                if self.combo.itemText(i).startswith(_FOLDER_PREFIX):
                    self.combo.removeItem(i)
                    break
            self.combo.insertItem(self.combo.count() - 1, _FOLDER_PREFIX + folder, folder)
            self.combo.setCurrentIndex(self.combo.count() - 2)
        finally:
            self.combo.blockSignals(False)
            if not quiet:
                self.changed.emit()

    def select_newest(self) -> None:
        """Choose the newest finished run (stays as it is when there is none)."""
        if self.choices:
            self.set_folder(self.choices[0].folder)

    def _activated(self, index: int) -> None:
        if self.combo.itemData(index) is None and self.combo.itemText(index) == _BROWSE:
            path = QFileDialog.getExistingDirectory(self, f"{self.role.replace('_', ' ').capitalize()} folder")
            self.set_folder(path or None)

    def _index_changed(self, _index: int) -> None:
        if self.combo.currentData() is not None or self.combo.currentText() != _BROWSE:
            self.changed.emit()


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
        self.adapter = RunPicker("adapter", none_text="None: the base model alone")
        self.adapter.changed.connect(self._adapter_changed)
        g = QGridLayout(self)
        g.setContentsMargins(0, 0, 0, 0)
        g.addWidget(QLabel(f"<b>{title}</b>"), 0, 0, 1, 3)
        g.addWidget(self.kind, 1, 0, 1, 3)
        g.addWidget(self.base, 2, 0, 1, 2)
        g.addWidget(self.browse, 2, 2)
        g.addWidget(QLabel("Adapter"), 3, 0)
        g.addWidget(self.adapter, 3, 1, 1, 2)
        self._kind_changed(0)

    def fill_adapters(self, project: Project) -> None:
        self.adapter.fill(project)

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

    def _adapter_changed(self) -> None:
        choice = self.adapter.choice()
        if choice is not None and choice.base_model:
            self._set_base(choice.base_model)  # a run's adapter runs on the base it was trained on
        self.changed.emit()

    # ------------------------------------------------------------------ values
    def _set_base(self, base: str) -> None:
        if base == BUNDLED_MODEL_REF:
            self.kind.setCurrentIndex(0)
        else:
            self.kind.setCurrentIndex(3 if base.endswith(".gguf") else 2 if os.path.isdir(base) else 1)
            self.base.setText(base)

    def set_model(self, base: str, adapter: str | None = None) -> None:
        self._set_base(base)
        self.adapter.set_folder(adapter, quiet=True)
        self.changed.emit()

    def value(self) -> tuple[str, str | None]:
        return (self.base.text().strip() or BUNDLED_MODEL_REF, self.adapter.folder())

    def label(self) -> str:
        choice = self.adapter.choice()
        if choice is not None:
            return choice.short_label
        base, adapter = self.value()
        short = base.split(":", 1)[1] if base.startswith("bundled:") else os.path.basename(base.rstrip("/")) or base
        return f"{short} + {os.path.basename(os.path.dirname(adapter.rstrip('/')))}/{os.path.basename(adapter.rstrip('/'))}" \
            if adapter else short
