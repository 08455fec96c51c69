"""Train: choose a stage, a base model, a starting adapter, the data snapshot and the settings; start, watch the
live curves, cancel, resume.

Every setting of the stage's config dataclass (``workbench.configs``) has an editor generated from the dataclass,
with its help text as the tooltip (:mod:`ui.config_form`); the settings that name a model folder (the starting
adapter, PPO's reward model and safety classifier, the DPO/PPO reference) are pickers of the project's finished runs
(:class:`~ui.model_picker.RunPicker`), a folder still possible. PPO with no reward model picked takes the newest
finished reward-model run when it starts and says which (the core's rule, as on the command line). Presets
(``resources/presets/*.yaml``) fill the editors. Beside the start button the run's memory estimate and the device's
free memory (:mod:`workbench.fit`) follow the settings. Before a start the page checks the data and the models
(:mod:`workbench.train_checks`); the run itself goes
through the shared :class:`~ui.engine_client.RunManager`, so a run resumed from the Runs page shows here too.
If the worker fails (an error, a crash, a kill, running out of memory) the reason and the log's tail appear in a
banner, and the window goes on working.
"""

from __future__ import annotations

import dataclasses
import os
import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.configs import ModelConfig, config_class
from workbench.errors import InputError, WorkbenchError
from workbench.fit import FitEstimate
from workbench.fit import estimate as fit_estimate
from workbench.jobs.client import Outcome, live_runs
from workbench.paths import BUNDLED_MODEL_REF
from workbench.run_report import fmt_duration
from workbench.run_choices import with_default_reward_model
from workbench.train_checks import SNAPSHOT_KIND, STAGES, UNIT, data_counts, preflight, snapshot_size, stage_count

from ..charts import MetricCharts
from ..config_form import ConfigForm, load_presets
from ..engine_client import run_manager
from ..model_picker import RunPicker
from .base import Page

# Fields the page edits with its own widgets rather than the generated form.
OWN_FIELDS = ("base_model", "adapter_from", "snapshot_id", "reward_model", "safety_model", "reference_adapter")
# The model-folder settings picked from finished runs: field → (role, label, the empty choice's text).
RUN_FIELDS = {
    "adapter_from": ("adapter", "Starting adapter", "None: a fresh adapter"),
    "reward_model": ("reward_model", "Reward model", "The newest finished reward-model run (taken at the start)"),
    "safety_model": ("safety_model", "Safety classifier (a cost subtracted from the reward)", "None: no safety cost"),
    "reference_adapter": ("adapter", "Reference", "None: the starting adapter, else the bare base"),
}
BASE_KINDS = ("Bundled default (SmolLM2-135M-Instruct)", "Hub id (local cache)", "Folder", "GGUF file")
MAX_LOG_LINES = 2000


def _field_help(name: str) -> str:
    for cls in ("ppo", "dpo", "sft"):
        for f in dataclasses.fields(config_class(cls)):
            if f.name == name:
                return f.metadata.get("help", "")
    return ""


class TrainPage(Page):
    name = "train"
    title = "Train"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.manager = run_manager(session)
        self.presets = load_presets()
        self.form: ConfigForm | None = None
        self.stage = "sft"
        self.run_id: int | None = None
        self.last_outcome: Outcome | None = None
        self._t0 = 0.0

        # ---------------------------------------------------------------- settings column
        self.preset = QComboBox()
        self.preset.addItem("Custom (defaults)")
        self.preset.addItems(list(self.presets))
        self.preset.setToolTip("Fill the settings from a preset (resources/presets/*.yaml)")
        self.preset.currentTextChanged.connect(self.apply_preset)
        self.preset_info = QLabel()
        self.preset_info.setWordWrap(True)
        self.preset_info.setStyleSheet("color: #555;")

        self.stage_box = QComboBox()
        for key, label in STAGES.items():
            self.stage_box.addItem(label, key)
        self.stage_box.currentIndexChanged.connect(lambda _i: self.set_stage(self.stage_box.currentData()))

        self.base_kind = QComboBox()
        self.base_kind.addItems(list(BASE_KINDS))
        self.base_kind.currentIndexChanged.connect(self._base_kind_changed)
        self.base_edit = QLineEdit()
        self.base_edit.setObjectName("base_model")
        self.base_edit.setToolTip(dataclasses.fields(ModelConfig)[0].metadata["help"])
        self.base_browse = QPushButton("Browse…")
        self.base_browse.clicked.connect(self._browse_base)

        self.pickers: dict[str, RunPicker] = {}
        self.picker_labels: dict[str, QLabel] = {}
        for name, (role, label, none_text) in RUN_FIELDS.items():
            picker = RunPicker(role, none_text=none_text)
            picker.setToolTip(_field_help(name))
            picker.changed.connect(self.check_soon)
            self.pickers[name] = picker
            self.picker_labels[name] = QLabel(label)

        self.snap_new = QRadioButton("A new snapshot of the current annotations")
        self.snap_old = QRadioButton("An existing snapshot")
        self.snap_new.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.snap_new)
        group.addButton(self.snap_old)
        self.snap_counts = QLabel()
        self.snap_counts.setWordWrap(True)
        self.snap_box = QComboBox()
        self.snap_old.toggled.connect(self.snap_box.setEnabled)
        self.snap_old.toggled.connect(lambda _on: self.check())
        self.snap_box.currentIndexChanged.connect(lambda _i: self.check())
        self.snap_box.setEnabled(False)

        self.form_holder = QVBoxLayout()
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setTextFormat(Qt.TextFormat.RichText)
        # the run's memory estimate beside the device's free memory (workbench.fit), updated with the settings
        self.fit = QLabel()
        self.fit.setObjectName("fit")
        self.fit.setWordWrap(True)
        # a run estimated not to fit is refused (as on the command line) unless the expert says start it anyway
        self.force_fit = QCheckBox("Start even if it may not fit")
        self.force_fit.setToolTip("The estimate can be wrong either way; the run may then stop when memory runs out.")
        self.force_fit.hide()
        self.force_fit.toggled.connect(self.check_soon)

        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setToolTip("Stop after the current step: the worker saves a checkpoint first")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the last cancelled or failed run from its last checkpoint")
        self.resume_button.clicked.connect(self.resume_last)

        left = QWidget()
        ll = QVBoxLayout(left)
        box = QGroupBox("Preset")
        bl = QVBoxLayout(box)
        bl.addWidget(self.preset)
        bl.addWidget(self.preset_info)
        ll.addWidget(box)
        box = QGroupBox("Stage and models")
        bl = QVBoxLayout(box)
        bl.addWidget(QLabel("Stage"))
        bl.addWidget(self.stage_box)
        bl.addWidget(QLabel("Base model"))
        bl.addWidget(self.base_kind)
        row = QHBoxLayout()
        row.addWidget(self.base_edit, 1)
        row.addWidget(self.base_browse)
        bl.addLayout(row)
        for name, picker in self.pickers.items():
            bl.addWidget(self.picker_labels[name])
            bl.addWidget(picker)
        ll.addWidget(box)
        box = QGroupBox("Data")
        bl = QVBoxLayout(box)
        bl.addWidget(self.snap_new)
        bl.addWidget(self.snap_counts)
        bl.addWidget(self.snap_old)
        bl.addWidget(self.snap_box)
        ll.addWidget(box)
        self.settings_box = QGroupBox("Settings (hover a name for its help)")
        self.settings_box.setLayout(self.form_holder)
        ll.addWidget(self.settings_box)
        ll.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(left)
        scroll.setMinimumWidth(360)

        # ---------------------------------------------------------------- run column
        self.status = QLabel("No run yet.")
        self.status.setStyleSheet("font-weight: bold;")
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)  # the ETA label beside it says step, speed and time left
        self.total_steps = 0
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.eta = QLabel()
        # A fixed size: a label whose text changes 4 times a second must not ask the page for a new layout.
        self.eta.setFixedSize(420, self.eta.sizeHint().height() + 4)
        self._progress: dict | None = None
        self.counts: dict[str, int] | None = None
        self.check_timer = QTimer(self)
        self.check_timer.setSingleShot(True)
        self.check_timer.setInterval(300)
        self.check_timer.timeout.connect(self.check)
        self.progress_timer = QTimer(self)
        self.progress_timer.setInterval(250)
        self.progress_timer.timeout.connect(self._apply_progress)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.setStyleSheet("background: #fde2e1; color: #611; padding: 6px; border: 1px solid #e99;")
        self.banner.hide()
        self.charts = MetricCharts()
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(MAX_LOG_LINES)
        self.log_view.setPlaceholderText("The run's log appears here.")
        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.resume_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.addLayout(buttons)
        rl.addWidget(self.fit)
        rl.addWidget(self.force_fit)
        rl.addWidget(self.problems)
        rl.addWidget(self.status)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.eta)
        rl.addLayout(row)
        rl.addWidget(self.banner)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.charts)
        split.addWidget(self.log_view)
        split.setSizes([480, 160])
        rl.addWidget(split, 1)

        outer = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(scroll)
        outer.addWidget(right)
        outer.setSizes([380, 900])
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(outer)

        self.manager.run_started.connect(self._on_started)
        self.manager.progress.connect(self._on_progress)
        self.manager.metrics.connect(self._on_metrics)
        self.manager.log.connect(self._on_log)
        self.manager.run_finished.connect(self._on_finished)
        self.manager.busy_changed.connect(self._update_buttons)

        self._base_kind_changed(0)
        self.set_stage("sft")
        self._update_buttons(False)
        self._reattach()

    # ------------------------------------------------------------------ page
    def activate(self) -> None:
        super().activate()
        self.refresh_data()

    def refresh_data(self) -> None:
        """Counts, snapshots and finished runs (they change as the expert annotates and trains)."""
        p = self.project
        counts = self.counts = data_counts(p)
        n = stage_count(self.stage, counts)
        # The project's counts as the status bar and Overview give them, then the part of each a snapshot takes.
        self.snap_counts.setText(
            f"{n:,} {UNIT[self.stage]} for this stage now · for training: {counts['pairs']:,} of "
            f"{counts['judged']:,} judged (verdicts for one response; ties, both bad, retests and blind-evaluation items "
            f"stay out), {counts['rankings']:,} of {counts['all_rankings']:,} rankings, {counts['demonstrations']:,} "
            f"of {counts['all_demonstrations']:,} demonstrations, {counts['safety_labels']:,} safety labels, on "
            f"{counts['train_prompts']:,} training prompts ({counts['heldout_prompts']:,} held out, never trained on)")
        keep = self.snap_box.currentData()
        self.snap_box.clear()
        for s in p.snapshots():
            if s["kind"] != SNAPSHOT_KIND[self.stage]:
                continue
            size = ", ".join(f"{v} {k}s" for k, v in sorted(snapshot_size(p, s["id"]).items())) or "empty"
            self.snap_box.addItem(f"#{s['id']} · {s['created_at'][:16].replace('T', ' ')} · {size}", s["id"])
        if keep is not None:
            i = self.snap_box.findData(keep)
            if i >= 0:
                self.snap_box.setCurrentIndex(i)
        self.snap_old.setEnabled(self.snap_box.count() > 0)
        for picker in self.pickers.values():
            picker.fill(p)
        self.check()

    # ------------------------------------------------------------------ settings
    def set_stage(self, stage: str) -> None:
        previous = self.form.raw_values() if self.form is not None else {}
        self.stage = stage
        i = self.stage_box.findData(stage)
        if self.stage_box.currentIndex() != i:
            self.stage_box.blockSignals(True)
            self.stage_box.setCurrentIndex(i)
            self.stage_box.blockSignals(False)
        if self.form is not None:
            self.form_holder.removeWidget(self.form)
            self.form.deleteLater()
        self.form = ConfigForm(config_class(stage), skip=OWN_FIELDS)
        # Carry over what the stages share (device, LoRA, batch…); the stage's own defaults stay for the rest
        # (its learning rate, its min_examples).
        own_defaults = dataclasses.asdict(config_class(stage)())
        base_defaults = dataclasses.asdict(config_class("sft")())
        carried = {k: v for k, v in previous.items()
                   if k in own_defaults and not (k in base_defaults and own_defaults[k] != base_defaults[k])}
        self.form.set_values(carried)
        if self.preset.currentIndex() > 0:
            self.form.set_values(self.presets[self.preset.currentText()]["settings"])
        self.form.changed.connect(self.check_soon)
        self.form_holder.addWidget(self.form)
        fields = {f.name for f in dataclasses.fields(config_class(stage))}
        for name, picker in self.pickers.items():
            picker.setVisible(name in fields)
            self.picker_labels[name].setVisible(name in fields)
        self.refresh_data()

    def apply_preset(self, title: str) -> None:
        preset = self.presets.get(title)
        if preset is None:
            self.preset_info.setText("The defaults of each setting (hover a name for its help).")
            if self.form is not None:
                self.form.set_values(dataclasses.asdict(config_class(self.stage)()))
            return
        self.preset_info.setText(" ".join(str(preset.get("description", "")).split()))
        if self.form is not None:
            self.form.set_values(preset["settings"])
        self.check()

    def _base_kind_changed(self, index: int) -> None:
        bundled = index == 0
        self.base_edit.setEnabled(not bundled)
        self.base_browse.setEnabled(index in (2, 3))
        if bundled:
            self.base_edit.setText(BUNDLED_MODEL_REF)
        elif self.base_edit.text() == BUNDLED_MODEL_REF:
            self.base_edit.clear()
        self.base_edit.setPlaceholderText({1: "e.g. HuggingFaceTB/SmolLM2-360M-Instruct (must be in the local cache)",
                                           2: "a folder with config.json and safetensors weights",
                                           3: "a .gguf file (converted once into the cache)"}.get(index, ""))

    def _browse_base(self) -> None:
        if self.base_kind.currentIndex() == 2:
            path = QFileDialog.getExistingDirectory(self, "Model folder")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "GGUF model", "", "GGUF files (*.gguf)")
        if path:
            self.base_edit.setText(path)

    def set_base_model(self, ref: str) -> None:
        """Choose the base model by reference (bundled, hub id, folder or GGUF file)."""
        if ref == BUNDLED_MODEL_REF:
            self.base_kind.setCurrentIndex(0)
            return
        kind = 3 if ref.endswith(".gguf") else 2 if os.path.isdir(ref) else 1
        self.base_kind.setCurrentIndex(kind)
        self.base_edit.setText(ref)

    def set_model_field(self, name: str, folder: str | None) -> None:
        """Pick a model folder for ``name`` (adapter_from, reward_model, safety_model, reference_adapter): its run
        when a finished run made it, else the folder."""
        self.pickers[name].set_folder(folder)

    def build_config(self) -> ModelConfig:
        """The config the page describes; InputError names a bad field."""
        assert self.form is not None
        base = self.base_edit.text().strip() or BUNDLED_MODEL_REF
        sid = self.snap_box.currentData() if self.snap_old.isChecked() else None
        fields = {f.name for f in dataclasses.fields(config_class(self.stage))}
        models = {name: picker.folder() for name, picker in self.pickers.items() if name in fields}
        return self.form.config(base_model=base, snapshot_id=sid, **models)

    def check_soon(self) -> None:
        """Check after typing pauses (a check reads the project: not on every key press)."""
        self.check_timer.start()

    def check(self) -> list:
        """Run the pre-start checks and show them; returns the problems (errors block Start)."""
        if self.form is None or not self.project.is_open:  # a pending check after the project was closed
            return []
        self.form.mark_error(None)
        try:
            cfg = self.build_config()
        except InputError as e:
            self.form.mark_error(e.field)
            self._show_problems([("error", str(e))])
            return [("error", str(e))]
        problems = [(p.level, p.message) for p in preflight(self.project, self.stage, cfg, counts=self.counts)]
        est = self._show_fit(cfg)
        if est is not None and est.fits is False and not self.force_fit.isChecked():
            problems.append(("error", f"{est.refusal()} Or tick “{self.force_fit.text()}”."))
        self._show_problems(problems)
        return problems

    def _show_fit(self, cfg: ModelConfig) -> FitEstimate | None:
        """Show the run's memory estimate (:class:`workbench.fit.FitEstimate`, or None) and return it."""
        est = fit_estimate(self.stage, cfg)
        self.force_fit.setVisible(est is not None and est.fits is False)
        if est is None:
            self.fit.setText("Memory: no estimate yet (the model's files are not on this machine before its first run).")
            self.fit.setToolTip("")
            self.fit.setStyleSheet("color: #555;")
            return None
        self.fit.setText(est.describe())
        self.fit.setToolTip(est.details())
        self.fit.setStyleSheet({True: "color: #262;", False: "color: #b00; font-weight: bold;"}.get(est.fits, "color: #555;"))
        return est

    def _show_problems(self, problems: list[tuple[str, str]]) -> None:
        if not problems:
            self.problems.setText("<span style='color:#262'>Ready: the checks pass.</span>")
        else:
            self.problems.setText("<br>".join(
                f"<span style='color:{'#b00' if lvl == 'error' else '#a60'}'>{'✖' if lvl == 'error' else '⚠'} "
                f"{msg}</span>" for lvl, msg in problems))
        self._blocked = any(lvl == "error" for lvl, _ in problems)
        self._update_buttons(self.manager.busy)

    # ------------------------------------------------------------------ running
    def start(self) -> bool:
        """Check, then start the run; False when a check or the engine refused."""
        self.counts = data_counts(self.project)  # fresh: annotations may have changed since the page was shown
        problems = self.check()
        if any(lvl == "error" for lvl, _ in problems):
            return False
        cfg = self.build_config()
        self._reset_view(f"Starting a {STAGES[self.stage]} run…")
        try:
            cfg, note = with_default_reward_model(self.project, cfg)
            if note:
                self.log_view.appendPlainText(note)
                self.status.setText(f"Starting a {STAGES[self.stage]} run; {note}")
            self.manager.start(self.stage, cfg)
        except WorkbenchError as e:
            self._fail_banner(str(e), "")
            return False
        return True

    def cancel(self) -> None:
        if self.manager.busy:
            self.status.setText(f"Run {self.run_id}: cancelling — saving a checkpoint, then stopping…")
            self.manager.cancel()

    def resume_last(self) -> None:
        if self.run_id is not None:
            self.resume(self.run_id)

    def resume(self, run_id: int) -> bool:
        self._reset_view(f"Resuming run {run_id}…", keep_charts=run_id == self.run_id)
        try:
            self.manager.resume(run_id)
        except WorkbenchError as e:
            self._fail_banner(str(e), "")
            return False
        return True

    def _reattach(self) -> None:
        """A run left going when the window closed: show it again, live. One that ended while no window watched
        (the project still says running, but its worker is gone): attach to it anyway, which reads its log to the
        end and records how it ended. Otherwise show how the last run went."""
        if self.manager.busy:
            return
        all_runs = [r for r in self.project.runs() if r["stage"] in STAGES]
        live = live_runs(self.project)
        stale = [r for r in all_runs if r["status"] in ("pending", "running") and r not in live]
        target = (live or stale or [None])[-1]
        if target is not None:
            self.run_id = target["id"]
            self._reset_view(f"Re-attaching to run {target['id']} (started earlier)…")
            self.manager.attach(target["id"])  # its log is read from the start: the curves fill in at once
        elif all_runs:
            last = all_runs[-1]
            self.run_id = last["id"]
            self.charts.set_series("", self.project.metrics(last["id"]))
            self.status.setText(f"Last run: {last['id']} ({STAGES.get(last['stage'], last['stage'])}), {last['status']}"
                                + (f": {last['error']}" if last.get("error") else ""))
            if last["status"] in ("failed", "cancelled"):
                self.last_outcome = Outcome(last["id"], last["status"], error=last.get("error"))

    def _reset_view(self, text: str, keep_charts: bool = False) -> None:
        self.banner.hide()
        if not keep_charts:
            self.charts.clear()
            self.log_view.clear()
        self.charts.prepare()
        self.status.setText(text)
        self.bar.setRange(0, 0)  # busy until the first progress event
        self.eta.clear()
        self._t0 = time.monotonic()

    def _on_started(self, run_id: int, run_dir: str) -> None:
        self.run_id = run_id
        self.run_dir = run_dir
        self.status.setText(f"Run {run_id} ({STAGES.get(self.stage, self.stage)}) is running · {run_dir}")

    def _on_progress(self, p: dict) -> None:
        # Applied on a timer: a label or bar update per event would re-lay out the page at the event rate.
        self._progress = p
        if not self.progress_timer.isActive():
            self.progress_timer.start()

    def _apply_progress(self) -> None:
        p, self._progress = self._progress, None
        if p is None:
            self.progress_timer.stop()
            return
        step, total = int(p.get("step") or 0), int(p.get("total") or 0)
        if total > 0:
            # In percent: QProgressBar.setValue repaints at once, so it should change at most 100 times a run.
            if self.bar.maximum() != 100:
                self.bar.setRange(0, 100)
            value = min(100, step * 100 // total)
            if value != self.bar.value():
                self.bar.setValue(value)
            self.total_steps = total
        parts = [f"step {step}/{total}" if total else f"step {step}"]
        if p.get("tokens_per_s"):
            parts.append(f"{float(p['tokens_per_s']):,.0f} tokens/s")
        eta = p.get("eta_s")
        if eta is None and total and step:
            elapsed = time.monotonic() - self._t0
            eta = elapsed / step * (total - step)
        parts.append(f"ETA {fmt_duration(eta)}")
        self.eta.setText(" · ".join(parts))

    def _on_metrics(self, step: int, values: dict) -> None:
        self.charts.add_points(step, values)

    def _on_log(self, level: str, message: str) -> None:
        self.log_view.appendPlainText(f"[{level}] {message}" if level != "info" else message)

    def _on_finished(self, outcome: Outcome) -> None:
        if not self.project.is_open:
            return  # the project was closed while the run ended
        self.last_outcome = outcome
        self.bar.setRange(0, max(1, self.bar.maximum()))
        rid = outcome.run_id if outcome.run_id is not None else "?"
        if outcome.status == "done":
            self.bar.setValue(self.bar.maximum())
            fm = ", ".join(f"{k} {v:.4g}" for k, v in sorted(outcome.final_metrics.items())
                           if isinstance(v, (int, float)))
            self.status.setText(f"Run {rid} finished. {fm}".strip())
            self.status.setToolTip(f"Output: {outcome.output}")
        elif outcome.status == "cancelled":
            self.status.setText(f"Run {rid} cancelled; Resume continues from its last checkpoint.")
        elif outcome.status == "detached":
            self.status.setText(f"Run {rid} goes on in the background.")
        else:
            self.status.setText(f"Run {rid} failed.")
            self._fail_banner(outcome.error or "the run failed", outcome.log_tail)
        self._apply_progress()
        self.charts.flush(fit=outcome.status != "detached")
        self.refresh_data()

    def _fail_banner(self, message: str, tail: str) -> None:
        self.banner.setText(f"<b>The run failed:</b> {message}")
        self.banner.show()
        if tail:
            self.log_view.appendPlainText("---- log ----\n" + tail)
        self._update_buttons(self.manager.busy)

    def _update_buttons(self, busy: bool) -> None:
        blocked = getattr(self, "_blocked", False)
        self.start_button.setEnabled(not busy and not blocked)
        self.cancel_button.setEnabled(busy)
        can_resume = (not busy and self.last_outcome is not None and self.run_id is not None
                      and self.last_outcome.status in ("cancelled", "failed"))
        self.resume_button.setEnabled(can_resume)

    # ------------------------------------------------------------------ closing
    def confirm_close(self) -> bool:
        """Ask what to do with a run still going when the window closes; False: stay open."""
        if not self.manager.busy:
            return True
        box = QMessageBox(self)
        box.setWindowTitle("A run is going")
        box.setText(f"Run {self.run_id} is still going.")
        box.setInformativeText("Cancel it (it saves a checkpoint you can resume), or let it finish in the background "
                               "(the next time you open this project, the Train page shows it again).")
        box.setObjectName("closeWhileRunning")
        cancel = box.addButton("Cancel the run", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Let it finish in the background", QMessageBox.ButtonRole.AcceptRole)
        stay = box.addButton("Don't close", QMessageBox.ButtonRole.RejectRole)
        for button, name in ((cancel, "cancelRun"), (keep, "letItFinish"), (stay, "dontClose")):
            button.setObjectName(name)
        box.setEscapeButton(stay)  # Esc, or closing the question itself, keeps the window open
        box.exec()
        if box.clickedButton() is cancel:
            self.manager.cancel(timeout_s=30)
            self.manager.current.wait(60000)
            return True
        if box.clickedButton() is keep:
            self.manager.detach_all()
            return True
        return False
