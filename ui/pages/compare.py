"""Compare: the prompt as a conversation and two responses side by side, judged from the keyboard.

Sides are shuffled per item (``left_side`` records which response was on the left) and the keys speak of screen
sides; :meth:`ComparePage._judge` maps them to the store's ``a``/``b``. Every action is one committed store call
made before the next item is shown. Keys come from ``ui.shortcuts`` (scopes ``compare`` and ``flag``).
"""

from __future__ import annotations

import random
import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.queue import AnnotationQueue, QueueConfig, sources, tags
from workbench.store import Comparison
from workbench.taxonomy import CRITERIA

from ..flagging import FlaggingMixin
from ..render import TextPane
from ..widgets import LazyCombo, conversation_markdown, other
from .base import Page

STRENGTH_WORDS = {"slight": "slightly better", "clear": "better", "strong": "much better"}
CRITERION_CYCLE = (None, "left", "right", "tie")


class ComparePage(FlaggingMixin, Page):
    name = "compare"
    title = "Compare"

    def __init__(self, session, parent: QWidget | None = None, *, seed: int | None = None):
        super().__init__(session, parent)
        self.rng = random.Random(seed)
        self.queue: AnnotationQueue | None = None
        self._seed = seed
        self.current: Comparison | None = None
        self.left_side = "a"
        self.shown_at = 0.0
        self.criteria: dict[str, str | None] = {}
        self.note: str | None = None
        self.flag_state: dict | None = None
        self.undo_stack: list[tuple] = []
        self._harm_counted: set[int] = set()

        # ---- filters and item line
        self.source_box = LazyCombo("all sources", lambda: sources(self.project))
        self.tag_box = LazyCombo("all tags", lambda: tags(self.project))
        for box in (self.source_box, self.tag_box):
            box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
            box.setMinimumWidth(140)
            box.activated.connect(self._filters_changed)
        self.item_label = QLabel()
        self.item_label.setStyleSheet("color: gray;")
        top = QHBoxLayout()
        top.addWidget(QLabel("Source"))
        top.addWidget(self.source_box)
        top.addWidget(QLabel("Tag"))
        top.addWidget(self.tag_box)
        top.addStretch(1)
        top.addWidget(self.item_label)

        # ---- prompt and responses
        self.prompt_pane = TextPane(first_chars=self.session.prefs.get("render/first_chars"))
        self.left_pane = TextPane(first_chars=self.session.prefs.get("render/first_chars"))
        self.right_pane = TextPane(first_chars=self.session.prefs.get("render/first_chars"))
        self.left_head, self.right_head = QLabel(), QLabel()
        for head in (self.left_head, self.right_head):
            head.setStyleSheet("font-weight: bold; font-size: 14px;")
        cols = QSplitter(Qt.Orientation.Horizontal)
        for head, pane in ((self.left_head, self.left_pane), (self.right_head, self.right_pane)):
            box = QWidget()
            v = QVBoxLayout(box)
            v.setContentsMargins(0, 0, 0, 0)
            v.addWidget(head)
            v.addWidget(pane, 1)
            cols.addWidget(box)
        rows = QSplitter(Qt.Orientation.Vertical)
        rows.addWidget(self.prompt_pane)
        rows.addWidget(cols)
        rows.setStretchFactor(0, 1)
        rows.setStretchFactor(1, 3)
        rows.setSizes([150, 600])
        for pane in (self.prompt_pane, self.left_pane, self.right_pane):
            pane.browser.setFocusPolicy(Qt.FocusPolicy.NoFocus)

        # ---- criteria, note, flag bar, writer, feedback
        self.criteria_label = QLabel()
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("Note for this item (Enter saves, Esc cancels)")
        self.note_edit.returnPressed.connect(self._save_note)
        self.note_edit.hide()
        self.flag_bar = QLabel()
        self.flag_bar.setWordWrap(True)
        self.flag_bar.setStyleSheet("background: #fde2e2; color: black; padding: 6px;")
        self.flag_bar.hide()
        self.writer = QPlainTextEdit()
        self.writer.setPlaceholderText("Write a better answer (Markdown). Ctrl+Enter saves, Esc cancels.")
        self.writer.setMaximumHeight(200)
        self.writer.hide()
        self.feedback = QLabel()
        self.keys_hint = QLabel(
            "1/2/3 left strong/clear/slight · 4 tie · 5/6/7 right slight/clear/strong · X both bad · "
            "S skip · U undo · N note · F flag · W write · G guidelines · ? all keys"
        )
        self.keys_hint.setStyleSheet("color: gray;")
        self.empty_label = QLabel("The queue is empty: nothing left to compare with these filters.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.hide()
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)

        # Labels whose text changes on every item must not resize anything (a relayout per key press costs more
        # than the text itself).
        for label in (self.feedback, self.criteria_label):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(rows, 1)
        lay.addWidget(self.empty_label, 1)
        self.rows = rows
        lay.addWidget(self.criteria_label)
        lay.addWidget(self.note_edit)
        lay.addWidget(self.flag_bar)
        lay.addWidget(self.writer)
        lay.addWidget(line)
        lay.addWidget(self.feedback)
        lay.addWidget(self.keys_hint)
        self._loaded = False

    # ------------------------------------------------------------------ loading
    def activate(self) -> None:
        super().activate()
        if not self._loaded:
            self._loaded = True
            self._new_queue()
            self.show_next()

    def _new_queue(self) -> None:
        config = QueueConfig(
            source=self.source_box.currentData(),
            tag=self.tag_box.currentData(),
            retest_share=float(self.session.prefs.get("queue/retest_share")),
        )
        self.queue = AnnotationQueue(self.project, config, seed=self._seed)

    def _filters_changed(self, *_: object) -> None:
        self._new_queue()
        self.show_next()
        self.setFocus()

    def show_next(self) -> None:
        assert self.queue is not None
        c = self.queue.next()
        if self.queue.added_retest:
            self.session.notify(pending=1)  # the queue just added a retest row
        self.show_item(c)

    def prefs_changed(self) -> None:
        """Folding or rendering switched: draw the same item again, same sides, same pending criteria."""
        if self.queue is not None:
            self.queue.config.retest_share = float(self.session.prefs.get("queue/retest_share"))
        if self.current is not None:
            criteria, note = dict(self.criteria), self.note
            self.show_item(self.current, keep_sides=True)
            self.criteria, self.note = criteria, note
            self._render_criteria()

    def show_item(self, c: Comparison | None, *, keep_sides: bool = False) -> None:
        self.current = c
        self.criteria = {k: None for k in CRITERIA}
        self.note = None
        self.flag_state = None
        self.flag_bar.hide()
        self.note_edit.hide()
        self.writer.hide()
        if c is None:
            self.rows.hide()
            self.empty_label.show()
            self.item_label.setText("")
            self._render_criteria()
            return
        self.empty_label.hide()
        self.rows.show()
        project = self.project
        prompt = project.get_prompt(c.prompt_id)
        self.prompt = prompt
        # Shuffle sides per item, so a habit of favouring one side cannot line up with one response source.
        if not keep_sides:
            self.left_side = self.rng.choice(("a", "b"))
        left_id = c.response_a if self.left_side == "a" else c.response_b
        right_id = c.response_b if self.left_side == "a" else c.response_a
        self.side_ids = {"left": left_id, "right": right_id}
        md = bool(self.session.prefs.get("render/markdown"))
        prompt_flags = project.flags_for_prompt(c.prompt_id)
        self.prompt_pane.set_text(conversation_markdown(prompt.messages), markdown=md,
                                  fold_reason=self.session.fold_reason([], prompt_flags))
        for side, pane, head in (("left", self.left_pane, self.left_head), ("right", self.right_pane, self.right_head)):
            rid = self.side_ids[side]
            flags = project.flags_for_response(rid)
            pane.set_text(project.get_response(rid).content, markdown=md, fold_reason=self.session.fold_reason(prompt.tags, flags))
            badge = "  ⚑ " + ", ".join(sorted({f[1].replace("_", " ") for f in flags})) if flags else ""
            head.setText(("A — left" if side == "left" else "B — right") + badge)
        tags_text = ", ".join(prompt.tags)
        # The prompt's id, not the comparison's: a retest row has a new, out-of-order id that would unblind it.
        self.item_label.setText(f"prompt {c.prompt_id} · {prompt.source or 'no source'}" + (f" · {tags_text}" if tags_text else ""))
        self._render_criteria()
        self.shown_at = time.monotonic()

    # ------------------------------------------------------------------ judging
    def _judge(self, verdict_side: str, strength: str | None) -> None:
        c = self.current
        if c is None:
            return
        if verdict_side in ("left", "right"):
            verdict = self.left_side if verdict_side == "left" else other(self.left_side)
        else:
            verdict = verdict_side
        criteria = {}
        for k, v in self.criteria.items():
            if v == "tie":
                criteria[k] = "tie"
            elif v == "left":
                criteria[k] = self.left_side
            elif v == "right":
                criteria[k] = other(self.left_side)
        spent = int((time.monotonic() - self.shown_at) * 1000)
        self.project.judge(
            c.id, verdict, strength=strength, left_side=self.left_side, criteria=criteria or None,
            note=self.note, time_spent_ms=spent,
        )
        self.undo_stack.append(("judge", c.id))
        self.queue.judged(c.id)
        self.session.notify(judged=1, pending=-1, action=1)
        words = {"tie": "tie", "both_bad": "both bad"}.get(verdict_side) or f"{verdict_side} {STRENGTH_WORDS[strength]}"
        self.feedback.setText(f"Saved #{c.id}: {words}. U undoes.")
        self.show_next()

    def act_left_strong(self, _k: str) -> None:
        self._judge("left", "strong")

    def act_left_clear(self, _k: str) -> None:
        self._judge("left", "clear")

    def act_left_slight(self, _k: str) -> None:
        self._judge("left", "slight")

    def act_right_slight(self, _k: str) -> None:
        self._judge("right", "slight")

    def act_right_clear(self, _k: str) -> None:
        self._judge("right", "clear")

    def act_right_strong(self, _k: str) -> None:
        self._judge("right", "strong")

    def act_tie(self, _k: str) -> None:
        self._judge("tie", None)

    def act_both_bad(self, _k: str) -> None:
        self._judge("both_bad", None)

    def _cycle(self, criterion: str) -> None:
        i = CRITERION_CYCLE.index(self.criteria.get(criterion))
        self.criteria[criterion] = CRITERION_CYCLE[(i + 1) % len(CRITERION_CYCLE)]
        self._render_criteria()

    def act_cycle_helpfulness(self, _k: str) -> None:
        self._cycle("helpfulness")

    def act_cycle_harmlessness(self, _k: str) -> None:
        self._cycle("harmlessness")

    def act_cycle_honesty(self, _k: str) -> None:
        self._cycle("honesty")

    def _render_criteria(self) -> None:
        parts = []
        for k, key in zip(CRITERIA, ("H", "M", "O")):
            v = self.criteria.get(k)
            parts.append(f"{k} [{key}]: <b>{v or '–'}</b>")
        note = f" · note: {self.note}" if self.note else ""
        self.criteria_label.setText("Criteria (optional) — " + " · ".join(parts) + note.replace("<", "&lt;"))

    # ------------------------------------------------------------------ skip, undo, note
    def act_skip(self, _k: str) -> None:
        if self.current is not None:
            self.queue.skip(self.current.id)
            self.feedback.setText(f"Skipped #{self.current.id}.")
        self.show_next()

    def act_undo(self, _k: str) -> None:
        if not self.undo_stack:
            self.feedback.setText("Nothing to undo.")
            return
        entry = self.undo_stack.pop()
        kind = entry[0]
        if kind == "judge":
            undone = self.project.undo(entry[1])
            self.session.notify(judged=-1, pending=1, action=-1)
            self.feedback.setText(f"Undone: the judgment of #{entry[1]} was {undone.how}.")
            self.show_item(undone.item)
        elif kind == "flag":
            how = self.project.retract("flag", entry[1])
            self.session.notify(flags=-1, action=-1)
            self.feedback.setText(f"Undone: flag {how}.")
            self._refresh_badges()
        elif kind == "write":
            _, demo_id, comparisons = entry
            for cid in comparisons:
                self.project.retract("comparison", cid)
            self.project.retract("demonstration", demo_id)
            self.session.notify(demonstrations=-1, judged=-len(comparisons), action=-1)
            self.feedback.setText("Undone: the written answer was removed.")

    def act_note(self, _k: str) -> None:
        if self.current is None:
            return
        self.note_edit.setText(self.note or "")
        self.note_edit.show()
        self.note_edit.setFocus()

    def _save_note(self) -> None:
        self.note = self.note_edit.text().strip() or None
        self.note_edit.hide()
        self._render_criteria()
        self.setFocus()

    def act_cancel_edit(self, _k: str) -> None:
        self.note_edit.hide()
        self.writer.hide()
        self.setFocus()

    # ------------------------------------------------------------------ write a better answer
    def act_write_better(self, _k: str) -> None:
        if self.current is None:
            return
        self.writer.show()
        self.writer.setFocus()

    def act_save_answer(self, _k: str) -> None:
        text = self.writer.toPlainText()
        if self.current is None or not self.writer.isVisible() or not text.strip():
            return
        spent = int((time.monotonic() - self.shown_at) * 1000)
        demo_id, made = self.project.write_better_answer(self.current.id, text, time_spent_ms=spent, note=self.note)
        self.undo_stack.append(("write", demo_id, made))
        self.session.notify(demonstrations=1, judged=len(made), action=1)
        self.writer.clear()
        self.writer.hide()
        self.setFocus()
        self.feedback.setText(f"Saved your answer (demonstration {demo_id}); it beats both responses shown. Now judge A vs B.")

    # ------------------------------------------------------------------ safety
    def act_reveal(self, _k: str) -> None:
        folded = [p for p in (self.prompt_pane, self.left_pane, self.right_pane) if p.folded]
        for p in folded:
            p.reveal()
        if folded:
            self._count_harmful()

    def _count_harmful(self) -> None:
        if self.current is not None and self.current.id not in self._harm_counted:
            self._harm_counted.add(self.current.id)
            self.session.saw_harmful()

    # ------------------------------------------------------------------ flagging (keys in ui.flagging)
    def flag_targets(self) -> dict[str, tuple[str, int | None]]:
        return {"L": ("the left response", self.side_ids["left"]), "R": ("the right response", self.side_ids["right"]), "P": ("the prompt", None)}

    def flag_prompt_id(self) -> int | None:
        return self.current.prompt_id if self.current is not None else None

    def flag_done(self, flag_id: int, target: str) -> None:
        self.undo_stack.append(("flag", flag_id))
        self._count_harmful()
        self.feedback.setText(f"Flagged {target}. U undoes.")
        self._refresh_badges()

    def _refresh_badges(self) -> None:
        for side, head in (("left", self.left_head), ("right", self.right_head)):
            flags = self.project.flags_for_response(self.side_ids[side])
            badge = "  ⚑ " + ", ".join(sorted({f[1].replace("_", " ") for f in flags})) if flags else ""
            head.setText(("A — left" if side == "left" else "B — right") + badge)

    # ------------------------------------------------------------------ reading long responses
    def act_show_more(self, _k: str) -> None:
        for p in (self.left_pane, self.right_pane, self.prompt_pane):
            p.show_all()

    def _scroll(self, pages: int) -> None:
        for p in (self.left_pane, self.right_pane):
            bar = p.browser.verticalScrollBar()
            bar.setValue(bar.value() + pages * bar.pageStep())

    def act_scroll_down(self, _k: str) -> None:
        self._scroll(1)

    def act_scroll_up(self, _k: str) -> None:
        self._scroll(-1)

