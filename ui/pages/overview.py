"""Overview: the loop at a glance and the next step as a button (what ``workbench gui PROJECT`` shows first).

- **Next step**: the core's :func:`workbench.loop.next_steps` (judge, write, train a reward model, run PPO or DPO,
  compare blind, generate the next round from the newest model); the first is the big button, the others sit
  beside it. A button opens the page that does the step with the right thing picked (Train on PPO with the newest
  reward model, Evaluation with the newest tuned run as model B, …); "Generate the next round" runs the core's next
  round (:mod:`workbench.next_round`) here, with a progress bar, and then opens Compare.
- **Where the project stands**: pending items, judged pairs, demonstrations, flags, prompts (held out), and the
  newest finished run of each stage with the figure that says what it achieved; the newest blind round's win rate.
- **Queue order**: in the order added, or closest reward-model scores first (:mod:`workbench.queue`); "Score the
  queue" has a reward model score the next pending pairs (the ``score`` job) so that order has gaps to go by.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from workbench.errors import WorkbenchError
from workbench.jobs.client import Outcome
from workbench.loop import ACTIONS, LoopState, Step, loop_state, next_steps
from workbench.next_round import next_round_config, record_round
from workbench.paths import BUNDLED_MODEL_REF
from workbench.queue import QUEUE_ORDERS, gap_run, queue_order, score_queue_config, scored_pending, set_queue_order
from workbench.train_checks import STAGES

from ..engine_client import EngineRun, run_manager
from ..model_picker import RunPicker
from ..navigation import go_to
from .base import Page

ROWS = (
    ("pending", "Pairs waiting (the queue)"),
    ("judged", "Judged"),
    ("rankings", "Rankings"),
    ("demonstrations", "Demonstrations"),
    ("flags", "Safety flags"),
    ("prompts", "Prompts"),
    ("heldout_prompts", "  held out (never trained on)"),
    ("responses", "Responses"),
    ("runs", "Runs"),
)
STAGE_ROWS = ("sft", "rm", "safety", "dpo", "ppo")
MAX_SIDE_STEPS = 4


class OverviewPage(Page):
    name = "overview"
    title = "Overview"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.manager = run_manager(session)
        self.state: LoopState | None = None
        self.steps: list[Step] = []
        self.job: EngineRun | None = None
        self.last_outcome: Outcome | None = None

        self.heading = QLabel()
        self.heading.setStyleSheet("font-size: 18px; font-weight: bold;")
        self.heading.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # ---------------------------------------------------------------- the next step
        self.next_button = QPushButton()
        self.next_button.setObjectName("nextStep")
        self.next_button.setStyleSheet("font-size: 15px; font-weight: bold; padding: 8px 18px;")
        self.next_button.clicked.connect(lambda: self.do(self.steps[0].action) if self.steps else None)
        self.next_why = QLabel()
        self.next_why.setWordWrap(True)
        self.side_buttons: list[QPushButton] = []
        self.side_row = QHBoxLayout()
        self.side_row.addWidget(QLabel("Also:"))
        for i in range(MAX_SIDE_STEPS):
            b = QPushButton()
            b.setObjectName(f"sideStep{i}")
            b.clicked.connect(lambda _=False, i=i: self.do(self.steps[i + 1].action))
            self.side_buttons.append(b)
            self.side_row.addWidget(b)
        self.side_row.addStretch(1)
        self.job_bar = QProgressBar()
        self.job_bar.hide()
        self.job_status = QLabel()
        self.job_status.setWordWrap(True)
        step_box = QGroupBox("Next step")
        sl = QVBoxLayout(step_box)
        row = QHBoxLayout()
        row.addWidget(self.next_button)
        row.addWidget(self.next_why, 1)
        sl.addLayout(row)
        sl.addLayout(self.side_row)
        sl.addWidget(self.job_bar)
        sl.addWidget(self.job_status)

        # ---------------------------------------------------------------- where the project stands
        counts = QGroupBox("Where the project stands")
        form = QFormLayout(counts)
        self.values: dict[str, QLabel] = {}
        for key, label in ROWS:
            v = QLabel("–")
            v.setObjectName(f"count_{key}")
            v.setAlignment(Qt.AlignmentFlag.AlignRight)
            self.values[key] = v
            form.addRow(label, v)
        runs = QGroupBox("What the newest run of each stage achieved")
        rg = QGridLayout(runs)
        self.stage_labels: dict[str, QLabel] = {}
        for i, stage in enumerate(STAGE_ROWS):
            rg.addWidget(QLabel(STAGES[stage]), i, 0, Qt.AlignmentFlag.AlignTop)
            v = QLabel("none yet")
            v.setWordWrap(True)
            v.setObjectName(f"stage_{stage}")
            self.stage_labels[stage] = v
            rg.addWidget(v, i, 1)
        rg.addWidget(QLabel("Blind comparison"), len(STAGE_ROWS), 0, Qt.AlignmentFlag.AlignTop)
        self.round_label = QLabel("no round yet")
        self.round_label.setWordWrap(True)
        rg.addWidget(self.round_label, len(STAGE_ROWS), 1)
        rg.setColumnStretch(1, 1)

        # ---------------------------------------------------------------- queue order
        self.order_box = QComboBox()
        self.order_box.setObjectName("queueOrder")
        for key, text in QUEUE_ORDERS.items():
            self.order_box.addItem(text, key)
        self.order_box.currentIndexChanged.connect(self._order_changed)
        self.rm_picker = RunPicker("reward_model", none_text=None)
        self.score_limit = QSpinBox()
        self.score_limit.setRange(1, 100_000)
        self.score_limit.setValue(200)
        self.score_button = QPushButton("Score the queue")
        self.score_button.setToolTip("The reward model scores the next pending pairs; closest scores come first")
        self.score_button.clicked.connect(self.score_queue)
        self.scored_label = QLabel()
        self.scored_label.setWordWrap(True)
        queue = QGroupBox("Queue order on the Compare page")
        ql = QGridLayout(queue)
        ql.addWidget(QLabel("Order"), 0, 0)
        ql.addWidget(self.order_box, 0, 1, 1, 3)
        ql.addWidget(QLabel("Reward model"), 1, 0)
        ql.addWidget(self.rm_picker, 1, 1)
        ql.addWidget(QLabel("next"), 1, 2)
        row = QHBoxLayout()
        row.addWidget(self.score_limit)
        row.addWidget(QLabel("pending pairs"))
        row.addWidget(self.score_button)
        ql.addLayout(row, 1, 3)
        ql.addWidget(self.scored_label, 2, 0, 1, 4)
        ql.setColumnStretch(1, 1)

        hint = QLabel("Ctrl+2 Compare · Ctrl+3 Rank · Ctrl+4 Write · Ctrl+5 History · Ctrl+6 Dashboard · "
                      "G guidelines · F1 every shortcut")
        hint.setStyleSheet("color: gray;")
        middle = QHBoxLayout()
        counts.setMaximumWidth(380)
        middle.addWidget(counts)
        middle.addWidget(runs, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.heading)
        lay.addWidget(step_box)
        lay.addLayout(middle)
        lay.addWidget(queue)
        lay.addStretch(1)
        lay.addWidget(hint)

    # ------------------------------------------------------------------ showing
    def activate(self) -> None:
        super().activate()
        self.refresh()

    def refresh(self) -> None:
        if not self.project.is_open:
            return
        self.heading.setText(str(self.project.path))
        state = self.state = loop_state(self.project)
        self.stats = state.counts
        for key, _ in ROWS:
            self.values[key].setText(f"{state.counts.get(key, 0):,}")
        if state.eval_pending:
            self.values["pending"].setText(f"{state.counts['pending']:,} ({state.eval_pending:,} blind evaluation)")
        for stage, label in self.stage_labels.items():
            run = state.latest.get(stage)
            label.setText(f"{run.short_label} · {run.finished_at[:16].replace('T', ' ')}"
                          + (f" · <b>{run.headline}</b>" if run.headline else "") if run else "none yet")
        self.round_label.setText(state.round_text or "no round yet")
        self.steps = next_steps(state)
        self._show_steps()
        self.order_box.blockSignals(True)
        self.order_box.setCurrentIndex(max(0, self.order_box.findData(queue_order(self.project))))
        self.order_box.blockSignals(False)
        self.rm_picker.fill(self.project)
        self._show_scored()
        self._buttons()

    def _show_steps(self) -> None:
        if not self.steps:
            self.next_button.hide()
            self.next_why.setText("Nothing to do: add prompts (Project → Import…) to start.")
        else:
            self.next_button.show()
            self.next_button.setText(self.steps[0].title)
            self.next_why.setText(self.steps[0].why)
        for i, b in enumerate(self.side_buttons):
            step = self.steps[i + 1] if i + 1 < len(self.steps) else None
            b.setVisible(step is not None)
            if step is not None:
                b.setText(step.title)
                b.setToolTip(step.why)

    def _show_scored(self) -> None:
        scored, pending = scored_pending(self.project)
        run_id = gap_run(self.project)
        if run_id is None:
            self.scored_label.setText("No pending pair is scored yet: pick a reward model and score the queue for "
                                      "the closest-first order (until then it serves the order added).")
        else:
            rm = self.project.get_run(run_id)["config"].get("reward_model", "")
            self.scored_label.setText(f"{scored:,} of {pending:,} pending pair(s) scored by run {run_id} "
                                      f"({rm}); closest first serves those, then the rest in the order added.")

    def _buttons(self) -> None:
        busy = self.job is not None
        writable = not self.project.read_only
        self.score_button.setEnabled(not busy and writable and bool(self.rm_picker.folder()))
        self.next_button.setEnabled(not busy)
        for b in self.side_buttons:
            b.setEnabled(not busy)

    def _order_changed(self, _i: int) -> None:
        try:
            set_queue_order(self.project, self.order_box.currentData())
        except WorkbenchError as e:
            self.job_status.setText(f"<span style='color:#b00'>{e}</span>")

    # ------------------------------------------------------------------ the steps
    def do(self, action: str) -> QWidget | None:
        """Carry out a step: open its page with the right things picked, or (next round) start it here."""
        state = self.state
        if action not in ACTIONS or state is None:
            return None
        if action == "judge_eval" and state.eval_source:
            return go_to(self, "compare", lambda page: _filter_source(page, state.eval_source))
        if action in ("judge", "judge_eval"):
            return go_to(self, "compare")
        if action == "write":
            return go_to(self, "write")
        if action == "generate":
            return go_to(self, "generate")
        if action == "next_round":
            self.start_next_round()
            return self
        if action == "blind_compare":
            tuned = state.newest_tuned
            if tuned is None:
                return go_to(self, "evaluation")
            return go_to(self, "evaluation", lambda page: page.evaluate_run(tuned.base_model or BUNDLED_MODEL_REF,
                                                                            tuned.folder))
        stage = {"train_rm": "rm", "train_ppo": "ppo", "train_dpo": "dpo"}[action]
        rm = state.latest.get("rm")

        def pick(train) -> None:
            train.set_stage(stage)
            if stage == "ppo" and rm is not None:
                train.set_model_field("reward_model", rm.folder)
        return go_to(self, "train", pick)

    def start_next_round(self) -> bool:
        if self.job is not None:
            return False
        try:
            nxt = next_round_config(self.project)
        except WorkbenchError as e:
            self.job_status.setText(f"<span style='color:#b00'>{e}</span>")
            return False
        record_round(self.project, nxt)
        self.job_status.setText(nxt.description[0].upper() + nxt.description[1:] + "…")
        self._run(self.manager.job("generate", nxt.config), self._round_done)
        return True

    def _round_done(self, outcome: Outcome) -> None:
        if self._job_ended(outcome, "Generation"):
            added = outcome.summary.get("comparisons", 0)
            self.job_status.setText(f"Next round: {added} new pair(s) queued; opening Compare.")
            self.session.notify(pending=int(added or 0), responses=int(outcome.summary.get("responses", 0) or 0))
            go_to(self, "compare")

    def score_queue(self) -> bool:
        folder = self.rm_picker.folder()
        if self.job is not None or not folder:
            return False
        try:
            cfg = score_queue_config(self.project, folder, self.score_limit.value())
        except WorkbenchError as e:
            self.job_status.setText(f"<span style='color:#b00'>{e}</span>")
            return False
        self.job_status.setText(f"Scoring {len(cfg.comparison_ids)} pending pair(s)…")
        self._run(self.manager.job("score", cfg), self._scoring_done)
        return True

    def _scoring_done(self, outcome: Outcome) -> None:
        if self._job_ended(outcome, "Scoring"):
            self.job_status.setText("The queue is scored: pick “closest reward-model scores first” to judge the "
                                    "pairs the reward model is least sure about first.")

    def _run(self, job: EngineRun, done) -> None:
        self.job = job
        job.progress.connect(self._progress)
        job.finished_run.connect(done)
        self.job_bar.setRange(0, 0)
        self.job_bar.show()
        job.start()
        self._buttons()

    def _progress(self, p: dict) -> None:
        total = int(p.get("total") or 0)
        if total:
            self.job_bar.setRange(0, total)
            self.job_bar.setValue(int(p.get("step") or 0))

    def _job_ended(self, outcome: Outcome, what: str) -> bool:
        """Common end of the page's jobs; True when it finished."""
        self.last_outcome = outcome
        self.job = None
        self.job_bar.hide()
        if not self.project.is_open:
            return False
        if outcome.status != "done":
            self.job_status.setText(f"<span style='color:#b00'>{what} {outcome.status}: "
                                    f"{outcome.error or ''}</span>")
        self.refresh()
        return outcome.status == "done"


def _filter_source(compare: QWidget, source: str) -> None:
    """Narrow the Compare page's queue to one source (a blind round's pairs) through its source filter, as picking
    it there would."""
    box = getattr(compare, "source_box", None)
    if box is None:
        return
    if hasattr(box, "ensure_loaded"):
        box.ensure_loaded()
    if box.findData(source) < 0:
        box.addItem(source, source)  # the filter's list was read before the round existed
    box.setCurrentIndex(box.findData(source))
    box.activated.emit(box.currentIndex())
