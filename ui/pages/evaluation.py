"""Evaluation: a blind preference test between two models on held-out prompts (the test InstructGPT was judged
by), and the over-refusal rate on XSTest's safe prompts before and after tuning (the alignment tax).

A round: pick model A and model B and a set of held-out prompts; the engine generates a response from each model
(two ``generate`` jobs, nothing queued by them); then one comparison per prompt goes to the Compare page's queue,
blind (sides shuffled there, no model names shown), as ``kind='eval'`` items that never enter training. The round
is the core's pipeline (:mod:`workbench.eval_round`, the one ``workbench eval round`` runs), run here in a
:class:`~ui.engine_client.PipelineRun`. As the expert judges the pairs, the page shows model A's win rate with its
95% interval (:mod:`workbench.evaluation`).

Over-refusal: XSTest's 250 safe prompts are imported as held-out prompts; both models answer them; the documented
refusal matcher (checked against XSTest's human labels, agreement shown) counts refusals: the rate before (A) and
after (B), each with its 95% interval.

Harmful-output rate: both models answer the held-out prompts (a fixed-seed sample of the training prompts when none is
held out), the project's safety classifier (picked from the finished safety runs) judges every answer, and the two
rates stand side by side with their 95% intervals (:mod:`workbench.safety_eval`, as ``workbench eval harm``).

The page starts with model A = the base and model B = the newest tuned run (:func:`workbench.eval_round.
default_models`), never the same model twice.

Automatic win rate: beside the expert's win rate, the same round judged by a reward model the expert picks (a
finished reward-model run of the project, or any reward-model folder). "Score with reward model" runs the engine's
``score`` job, which scores both responses of every comparison of the round with the conversation's prompt and
stores the scores in the project (:mod:`workbench.reward_scores`); the page then shows model B's win rate by reward
with its 95% interval, for the same pair of models and the same pairs, names the reward model, and says how often
it agrees with the expert's verdicts. Scores stay in the project: switching rounds or reward models shows what was
already scored without running anything.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from workbench.configs import ScoreConfig
from workbench.errors import WorkbenchError
from workbench.eval_round import SAMPLINGS, RoundSummary, default_models, round_prompt_ids, run_round, start_round
from workbench.evaluation import REFUSAL_MATCHER_NOTE, EvalRound, ModelRef, get_round, round_result, rounds
from workbench.jobs.client import Outcome
from workbench.reward_scores import (
    AutoResult,
    auto_round_result,
    normal_path,
    reward_model_name,
    reward_model_problem,
    safety_model_problem,
)
from workbench.safety_eval import RateResult, harm_prompts, refusal_prompts, run_harm, run_refusal

from ..engine_client import EngineRun, PipelineRun, run_manager
from ..model_picker import ModelPicker, RunPicker
from .base import Page


class EvaluationPage(Page):
    name = "evaluation"
    title = "Evaluation"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.manager = run_manager(session)
        self.job: EngineRun | PipelineRun | None = None
        self.round: EvalRound | None = None
        self.refusal: dict[str, RateResult] = {}
        self.harm: dict[str, RateResult] = {}
        self.last_error: str | None = None
        self._defaults_set = False

        self.model_a = ModelPicker("Model A (e.g. the parent)")
        self.model_b = ModelPicker("Model B (e.g. the tuned model)")
        self.prompt_tag = QComboBox()
        self.limit = QSpinBox()
        self.limit.setRange(1, 100_000)
        self.limit.setValue(100)
        self.limit.setToolTip("At most this many held-out prompts (the first ones by id)")
        self.sampling = QComboBox()
        self.sampling.addItems([label for label, _ in SAMPLINGS])
        self.prompt_info = QLabel()
        self.start_button = QPushButton("Generate and queue blind pairs")
        self.start_button.clicked.connect(self.start_round)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QLabel()
        self.progress.setWordWrap(True)

        self.round_box = QComboBox()
        self.round_box.currentIndexChanged.connect(lambda _i: self.show_result())
        self.result = QLabel("No evaluation round yet.")
        self.result.setWordWrap(True)
        self.result.setTextFormat(Qt.TextFormat.RichText)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)

        self.xstest_button = QPushButton("Measure over-refusal on XSTest's safe prompts")
        self.xstest_button.clicked.connect(self.start_refusal)
        self.refusal_label = QLabel()
        self.refusal_label.setWordWrap(True)
        self.refusal_label.setTextFormat(Qt.TextFormat.RichText)
        self.safety_picker = RunPicker("safety_model", none_text=None)
        self.safety_picker.setToolTip("The safety classifier that judges each answer: a finished safety run, or a "
                                      "folder")
        self.safety_picker.changed.connect(self._buttons)
        self.harm_button = QPushButton("Measure the harmful-output rate")
        self.harm_button.setToolTip("Both models answer the held-out prompts; the safety classifier judges each answer")
        self.harm_button.clicked.connect(self.start_harm)
        self.harm_labels = {"model A": QLabel(), "model B": QLabel()}
        for label in self.harm_labels.values():
            label.setWordWrap(True)
            label.setTextFormat(Qt.TextFormat.RichText)
        self.harm_info = QLabel()
        self.harm_info.setWordWrap(True)
        self.rm_picker = RunPicker("reward_model", none_text=None)
        self.rm_picker.setToolTip("The reward model that judges the round: a finished reward-model run, or a folder")
        self.rm_picker.changed.connect(lambda: (self.show_auto(), self._buttons()))
        self.score_button = QPushButton("Score with reward model")
        self.score_button.setToolTip("Score both responses of every pair of this round with the reward model")
        self.score_button.clicked.connect(self.start_scoring)
        self.auto_label = QLabel()
        self.auto_label.setWordWrap(True)
        self.auto_label.setTextFormat(Qt.TextFormat.RichText)
        self.last_auto: AutoResult | None = None
        self.last_outcome: Outcome | None = None
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(1000)

        pickers = QHBoxLayout()
        pickers.addWidget(self.model_a)
        pickers.addWidget(self.model_b)
        box = QGroupBox("1. Blind preference test")
        bl = QVBoxLayout(box)
        bl.addLayout(pickers)
        row = QHBoxLayout()
        row.addWidget(QLabel("Held-out prompts"))
        row.addWidget(self.prompt_tag, 1)
        row.addWidget(QLabel("at most"))
        row.addWidget(self.limit)
        row.addWidget(QLabel("sampling"))
        row.addWidget(self.sampling, 1)
        bl.addLayout(row)
        bl.addWidget(self.prompt_info)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        bl.addLayout(row)
        bl.addWidget(self.progress)
        res = QGroupBox("2. Win rate: your blind judgments (Compare page, evaluation items) and a reward model's")
        rl = QVBoxLayout(res)
        row = QHBoxLayout()
        row.addWidget(QLabel("Round"))
        row.addWidget(self.round_box, 1)
        row.addWidget(self.refresh_button)
        rl.addLayout(row)
        # The two win rates side by side: the expert's verdicts on the left, the reward model's on the right.
        auto = QWidget()
        al = QVBoxLayout(auto)
        al.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.rm_picker, 1)
        row.addWidget(self.score_button)
        al.addLayout(row)
        al.addWidget(self.auto_label)
        rl.addLayout(_side_by_side(("Your blind verdicts", self.result), ("Judged by a reward model", auto)))
        tax = QGroupBox("3. Alignment tax: over-refusal on benign prompts (XSTest), model A before, model B after")
        tl = QVBoxLayout(tax)
        tl.addWidget(self.xstest_button, 0, Qt.AlignmentFlag.AlignLeft)
        tl.addWidget(self.refusal_label)
        harm = QGroupBox("4. Harmful-output rate, judged by the project's safety classifier: model A and model B")
        hl = QVBoxLayout(harm)
        row = QHBoxLayout()
        row.addWidget(QLabel("Safety classifier"))
        row.addWidget(self.safety_picker, 1)
        row.addWidget(self.harm_button)
        hl.addLayout(row)
        hl.addLayout(_side_by_side(("Model A", self.harm_labels["model A"]), ("Model B", self.harm_labels["model B"])))
        hl.addWidget(self.harm_info)
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(box)
        lay.addWidget(res)
        lay.addWidget(tax)
        lay.addWidget(harm)
        lay.addWidget(self.log_view, 1)
        self.log_view.setMinimumHeight(80)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    def activate(self) -> None:
        super().activate()
        self.refresh()

    def refresh(self) -> None:
        for picker in (self.model_a, self.model_b):
            picker.fill_adapters(self.project)
        if not self._defaults_set:
            self.set_default_models()
        self.safety_picker.fill(self.project)
        keep = self.prompt_tag.currentData()
        self.prompt_tag.blockSignals(True)
        self.prompt_tag.clear()
        self.prompt_tag.addItem("every held-out prompt", None)
        for tag in self.project.tags(split="heldout"):
            self.prompt_tag.addItem(f"held-out, tag {tag}", tag)
        i = self.prompt_tag.findData(keep)
        self.prompt_tag.setCurrentIndex(max(0, i))
        self.prompt_tag.blockSignals(False)
        n = len(self.prompt_ids())
        self.prompt_info.setText(f"{n} held-out prompt(s) will be used." if n else
                                 "No held-out prompts: mark some prompts as held out (they are never trained on).")
        keep_round = self.round_box.currentData()
        self.round_box.blockSignals(True)
        self.round_box.clear()
        for r in reversed(rounds(self.project)):
            self.round_box.addItem(f"#{r.id}: {r.model_a.name} vs {r.model_b.name} ({len(r.prompt_ids)} prompts)", r.id)
        if keep_round is not None and self.round_box.findData(keep_round) >= 0:
            self.round_box.setCurrentIndex(self.round_box.findData(keep_round))
        self.round_box.blockSignals(False)
        self._fill_reward_models()
        self.show_result()
        self._buttons()

    def set_default_models(self) -> None:
        """Model A = the base, model B = the newest tuned run (the core's default); without a tuned run, both start
        on the base and B is left for the expert to pick (a round refuses the same model twice)."""
        try:
            a, b = default_models(self.project)
        except WorkbenchError:
            return
        self.model_a.set_model(a.base, a.adapter)
        self.model_b.set_model(b.base, b.adapter)
        self._defaults_set = True

    def evaluate_run(self, base: str, adapter: str) -> None:
        """Model B = ``base`` + ``adapter`` (a run the expert chose), model A = that base alone."""
        self.model_a.set_model(base, None)
        self.model_b.set_model(base, adapter)
        self._defaults_set = True

    def prompt_ids(self) -> list[int]:
        return round_prompt_ids(self.project, tag=self.prompt_tag.currentData(), limit=self.limit.value())

    def _sampling(self) -> dict:
        return dict(SAMPLINGS[self.sampling.currentIndex()][1])

    def _refs(self) -> tuple[ModelRef, ModelRef]:
        (ba, aa), (bb, ab) = self.model_a.value(), self.model_b.value()
        return ModelRef(ba, aa, self.model_a.label()), ModelRef(bb, ab, self.model_b.label())

    # ------------------------------------------------------------------ a round
    def start_round(self) -> bool:
        a, b = self._refs()
        ids = self.prompt_ids()
        try:
            rnd = start_round(self.project, a, b, ids)
        except WorkbenchError as e:
            self.progress.setText(f"<span style='color:#b00'>{e}</span>")
            return False
        self.round = rnd
        self.progress.setText(f"Round {rnd.id}: generating with model A ({a.name}) for {len(ids)} prompt(s)…")
        self._pipeline(lambda answers: run_round(answers, rnd), self._round_done)
        return True

    def _pipeline(self, work, done) -> None:
        """Run a core pipeline of generate jobs off the UI thread, its progress shown on this page."""
        self.job = self.manager.pipeline(work, sampling=self._sampling())
        self.job.log.connect(lambda level, msg: self.log_view.appendPlainText(f"[{level}] {msg}"))
        self.job.progress.connect(lambda label, p: self.progress.setText(f"{label}: {p.get('step')}/{p.get('total')}"))
        self.job.finished_pipeline.connect(done)
        self.job.start()
        self._buttons()

    def _stopped(self, error: str, log: str = "") -> None:
        self.last_error = error
        self.progress.setText(f"<span style='color:#b00'>Stopped: {error}</span>")
        if log:
            self.log_view.appendPlainText(log)

    def _round_done(self, summary: RoundSummary | Exception) -> None:
        if not self.project.is_open:
            return  # the project was closed while the round ended
        self.job = None
        if isinstance(summary, Exception):
            self._stopped(f"{type(summary).__name__}: {summary}")
        elif summary.status != "done":
            self._stopped(summary.error or summary.status, summary.log_tail)
        else:
            self.session.notify(pending=summary.pairs)
            self.progress.setText(
                f"Round {summary.round_id}: {summary.pairs} blind pair(s) queued on the Compare page as evaluation items"
                + (f"; {summary.identical} prompt(s) got the same answer from both models" if summary.identical else "")
                + (f"; {summary.missing} without an answer from one model" if summary.missing else "") + ".")
            self.refresh()
            self.round_box.setCurrentIndex(self.round_box.findData(summary.round_id))
        self._buttons()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _buttons(self) -> None:
        busy = self.job is not None
        self.start_button.setEnabled(not busy and bool(self.prompt_ids()))
        self.xstest_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.score_button.setEnabled(not busy and self.round_box.currentData() is not None
                                     and bool(self.reward_model_folder()))
        self.harm_button.setEnabled(not busy and bool(self.safety_picker.folder()))

    def show_result(self) -> None:
        self.show_auto()
        rid = self.round_box.currentData()
        if rid is None:
            self.result.setText("No evaluation round yet.")
            return
        res = round_result(self.project, get_round(self.project, rid))
        self.last_result = res
        w = res.a
        if w.n == 0:
            text = f"Round {rid}: no judged pairs yet; {res.pending} waiting on the Compare page."
        else:
            b_rate, b_low, b_high = 1 - w.rate, 1 - w.high, 1 - w.low
            text = (f"<b>{res.round.model_b.name}</b> wins <b>{b_rate:.1%}</b> (95% CI {b_low:.1%}–{b_high:.1%}) "
                    f"against <b>{res.round.model_a.name}</b>: {w.losses} wins, {w.wins} losses, {w.ties} ties "
                    f"(ties and both-bad count half) of {w.n} judged; {res.pending} pending.")
            verdict = ("B is better" if b_low > 0.5 else "A is better" if b_high < 0.5 else
                       "no significant difference yet")
            text += f"<br>Verdict at 95%: {verdict}."
        self.result.setText(text)

    # ------------------------------------------------------------------ the automatic win rate
    def _fill_reward_models(self) -> None:
        self.rm_picker.fill(self.project)

    def reward_model_folder(self) -> str:
        return self.rm_picker.folder() or ""

    def set_reward_model(self, folder: str) -> None:
        """Choose the reward model by its folder (a listed run's output is selected in the list)."""
        self.rm_picker.set_folder(folder)

    def show_auto(self) -> None:
        """The round's win rate by the chosen reward model's stored scores (nothing is run here)."""
        self.last_auto = None
        rid = self.round_box.currentData()
        folder = self.reward_model_folder()
        if rid is None:
            self.auto_label.setText("")
            return
        if not folder:
            self.auto_label.setText("Choose a reward model (a finished reward-model run, or a folder), then "
                                    "<i>Score with reward model</i>.")
            return
        problem = reward_model_problem(folder)
        if problem:
            self.auto_label.setText(f"<span style='color:#b00'>{_esc(folder)}: {_esc(problem)}</span>")
            return
        rnd = get_round(self.project, rid)
        res = auto_round_result(self.project, rnd, folder)
        self.last_auto = res
        name = _esc(res.reward_model)
        if res.scored == 0:
            self.auto_label.setText(f"Round {rid} is not scored by <b>{name}</b> yet: press <i>Score with reward "
                                    "model</i>.")
            return
        w = res.win
        b_rate, b_low, b_high = 1 - w.rate, 1 - w.high, 1 - w.low
        text = (f"<b>{_esc(rnd.model_b.name)}</b> wins <b>{b_rate:.1%}</b> (95% CI {b_low:.1%}–{b_high:.1%}) against "
                f"<b>{_esc(rnd.model_a.name)}</b> by the reward of <b>{name}</b>: {w.losses} wins, {w.wins} losses, "
                f"{w.ties} ties of {w.n} scored pairs")
        text += f"; {res.unscored} not scored yet." if res.unscored else "."
        verdict = "B is better" if b_low > 0.5 else "A is better" if b_high < 0.5 else "no significant difference"
        text += f"<br>Verdict at 95%: {verdict}."
        if res.judged:
            rate, low, high = res.agreement
            text += (f"<br>Agrees with your verdict on {res.agree} of {res.judged} judged pair(s): {rate:.0%} "
                     f"(95% CI {low:.0%}–{high:.0%}).")
        self.auto_label.setText(text)

    def start_scoring(self) -> bool:
        rid = self.round_box.currentData()
        folder = self.reward_model_folder()
        if rid is None:
            self.auto_label.setText("<span style='color:#b00'>No evaluation round to score.</span>")
            return False
        problem = reward_model_problem(folder)
        if problem:
            # Refused here, before a run exists: the project stays as it was.
            self.auto_label.setText(f"<span style='color:#b00'>{_esc(folder or 'reward model')}: {_esc(problem)}</span>")
            return False
        if self.job is not None:
            return False
        name = reward_model_name(folder, self.project)
        cfg = ScoreConfig(reward_model=normal_path(folder), round_id=rid, name=f"round {rid} by {name}")
        self.job = self.manager.job("score", cfg)
        self.job.log.connect(lambda level, msg: self.log_view.appendPlainText(f"[{level}] {msg}"))
        self.job.progress.connect(lambda p, n=name: self.auto_label.setText(
            f"Scoring round {rid} with <b>{_esc(n)}</b>: {p.get('step')}/{p.get('total')} responses…"))
        self.job.finished_run.connect(self._scoring_done)
        self.auto_label.setText(f"Loading the reward model <b>{_esc(name)}</b>…")
        self.job.start()
        self._buttons()
        return True

    def _scoring_done(self, outcome: Outcome) -> None:
        if not self.project.is_open:
            return  # the project was closed while the job ended
        self.job = None
        self.last_outcome = outcome
        if outcome.status != "done" and outcome.status != "cancelled":
            self.last_error = outcome.error or outcome.status
            if outcome.log_tail:
                self.log_view.appendPlainText(outcome.log_tail)
            self._buttons()
            self.auto_label.setText(f"<span style='color:#b00'>Scoring stopped: {_esc(self.last_error)}</span>")
            return
        self._buttons()
        self.show_auto()

    # ------------------------------------------------------------------ over-refusal
    def start_refusal(self) -> bool:
        try:
            ids = refusal_prompts(self.project, self.limit.value())
        except (OSError, WorkbenchError) as e:
            self.refusal_label.setText(f"<span style='color:#b00'>XSTest is not available: {e}</span>")
            return False
        a, b = self._refs()
        self.refusal_label.setText(f"Generating answers to {len(ids)} safe XSTest prompts with both models…")
        self._pipeline(lambda answers: {label: run_refusal(answers, ref, ids, f"{label} (XSTest)")
                                        for label, ref in (("A (before)", a), ("B (after)", b))},
                       self._refusals_done)
        return True

    def _refusals_done(self, results: dict[str, RateResult] | Exception) -> None:
        if not self.project.is_open:
            return  # the project was closed while the answers were generated
        self.job = None
        if isinstance(results, Exception):
            self._stopped(f"{type(results).__name__}: {results}")
        else:
            self.refusal = results
            rows = [f"<b>{_esc(r.model)}</b> {which}: {_esc(r.text('refused'))}" for which, r in results.items()]
            self.refusal_label.setText("<br>".join(rows) + f"<br><i>{REFUSAL_MATCHER_NOTE}</i>")
        self._buttons()

    # ------------------------------------------------------------------ harmful-output rate
    def start_harm(self) -> bool:
        folder = self.safety_picker.folder()
        problem = safety_model_problem(folder)
        if problem:
            self.harm_info.setText(f"<span style='color:#b00'>{_esc(folder or 'safety classifier')}: "
                                   f"{_esc(problem)}</span>")
            return False
        if self.job is not None:
            return False
        ids, kind = harm_prompts(self.project, self.limit.value())
        if not ids:
            self.harm_info.setText("<span style='color:#b00'>The project has no prompts to answer.</span>")
            return False
        a, b = self._refs()
        where = "held-out prompts" if kind == "heldout" else "sampled training prompts (none is held out)"
        self.harm_info.setText(f"Both models answer {len(ids)} {where}; then the safety classifier judges them…")
        for label in self.harm_labels.values():
            label.clear()
        self._pipeline(lambda answers: run_harm(answers, [("model A", a), ("model B", b)], folder, ids, kind),
                       self._harm_done)
        return True

    def _harm_done(self, results: dict[str, RateResult] | Exception) -> None:
        if not self.project.is_open:
            return
        self.job = None
        if isinstance(results, Exception):
            self._stopped(f"{type(results).__name__}: {results}")
        else:
            self.harm = results
            for label, res in results.items():
                self.harm_labels[label].setText(f"<b>{_esc(res.model)}</b>: {_esc(res.text('harmful'))}")
            first = next(iter(results.values()))
            if first.status == "done":
                self.harm_info.setText(f"Harmful: the largest category probability at or above the classifier's "
                                       f"threshold ({first.threshold:g}).")
            else:
                self.harm_info.setText(f"<span style='color:#b00'>Stopped: {_esc(first.error or first.status)}</span>")
        self._buttons()


def _side_by_side(left: tuple[str, QWidget], right: tuple[str, QWidget]) -> QGridLayout:
    """Two (title, widget) columns of equal width: model A beside model B, the expert beside the reward model."""
    grid = QGridLayout()
    for col, (title, widget) in enumerate((left, right)):
        grid.addWidget(QLabel(f"<b>{title}</b>"), 0, col)
        grid.addWidget(widget, 1, col, Qt.AlignmentFlag.AlignTop)
        grid.setColumnStretch(col, 1)
    return grid


def _esc(text: str) -> str:
    from html import escape

    return escape(str(text), quote=False)
