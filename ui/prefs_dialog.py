"""The Preferences dialog: safety folding, break reminder, retest share, Markdown rendering, the session's target
(kept in QSettings)."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget

from .prefs import Prefs


class PrefsDialog(QDialog):
    def __init__(self, prefs: Prefs, parent: QWidget | None = None):
        super().__init__(parent)
        self.prefs = prefs
        self.setWindowTitle("Preferences")
        self.hide_flagged = QCheckBox("Fold flagged and red-team content until revealed (R)")
        self.hide_flagged.setChecked(bool(prefs.get("safety/hide_flagged")))
        self.break_minutes = QSpinBox()
        self.break_minutes.setRange(5, 600)
        self.break_minutes.setSuffix(" min")
        self.break_minutes.setValue(int(prefs.get("safety/break_minutes")))
        self.break_harmful = QSpinBox()
        self.break_harmful.setRange(1, 10_000)
        self.break_harmful.setValue(int(prefs.get("safety/break_after_harmful")))
        self.retest_share = QDoubleSpinBox()
        self.retest_share.setRange(0, 50)
        self.retest_share.setSuffix(" %")
        self.retest_share.setDecimals(1)
        self.retest_share.setValue(float(prefs.get("queue/retest_share")) * 100)
        self.markdown = QCheckBox("Render responses as Markdown (raw HTML is always shown as text)")
        self.markdown.setChecked(bool(prefs.get("render/markdown")))
        self.target = QSpinBox()
        self.target.setRange(1, 100_000)
        self.target.setSuffix(" actions")
        self.target.setValue(int(prefs.get("session/target")))
        form = QFormLayout(self)
        form.addRow(self.hide_flagged)
        form.addRow("Break reminder after", self.break_minutes)
        form.addRow("… or after this many harmful items", self.break_harmful)
        form.addRow("Retests (blind repeats) in the queue", self.retest_share)
        form.addRow(self.markdown)
        form.addRow("Session target (the progress bar on Compare and Rank)", self.target)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.accepted.connect(self.save)

    def save(self) -> None:
        self.prefs.set("safety/hide_flagged", self.hide_flagged.isChecked())
        self.prefs.set("safety/break_minutes", self.break_minutes.value())
        self.prefs.set("safety/break_after_harmful", self.break_harmful.value())
        self.prefs.set("queue/retest_share", self.retest_share.value() / 100)
        self.prefs.set("render/markdown", self.markdown.isChecked())
        self.prefs.set("session/target", self.target.value())
