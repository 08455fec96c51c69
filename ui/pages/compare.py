"""Compare: the prompt as a conversation and two responses side by side, judged from the keyboard (or the buttons
beside the keys, which run the same handlers).

Sides are shuffled per item (``left_side`` records which stored response was on the left); the page speaks only of
screen sides and :mod:`workbench.sides` maps them to the store's ``a``/``b``. Every action is one committed store
call made before the next item is shown. Harmful content is folded (:mod:`ui.folding`) and a verdict on it is
refused until it is revealed. Keys come from ``ui.shortcuts`` (scopes ``compare`` and ``flag``).
"""

from __future__ import annotations

import random
import time

from PySide6.QtCore import Qt, QTimer
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
from workbench.reward_scores import score_gap
from workbench.sides import STRENGTH_WORDS, stored_side, stored_verdict
from workbench.store import Comparison
from workbench.taxonomy import CRITERIA

from ..flagging import FlaggingMixin
from ..folding import REVEAL_FIRST, FoldedItem, ReadingKeys
from ..render import TextPane
from ..widgets import LazyCombo, SessionProgress, conversation_markdown, key_button, turn_heading
from .base import Page

CRITERION_CYCLE = (None, "left", "right", "tie")
# (action, button text, what a narrow button shows): the verdict row, then the other actions, each beside its key.
VERDICT_BUTTONS = (
    ("left_strong", "Left much better", "◀◀◀"), ("left_clear", "Left better", "◀◀"), ("left_slight", "Left slightly", "◀"),
    ("tie", "Tie", "="), ("right_slight", "Right slightly", "▶"), ("right_clear", "Right better", "▶▶"),
    ("right_strong", "Right much better", "▶▶▶"), ("both_bad", "Both bad", "✕"),
)
ACTION_BUTTONS = (
    ("skip", "Skip", "Skip"), ("undo", "Undo", "Undo"), ("reveal", "Reveal", "Reveal"),
    ("check_safe", "Nothing harmful", "Safe"), ("flag", "Flag", "Flag"), ("note", "Note", "Note"),
    ("write_better", "Write better", "Write"),
)


def side_heading(side: str, flags: list[tuple]) -> str:
    """``Left`` or ``Right``, with the response's flag categories when it has any."""
    badge = "  ⚑ " + ", ".join(sorted({f[1].replace("_", " ") for f in flags})) if flags else ""
    return side.capitalize() + badge


class ComparePage(FlaggingMixin, ReadingKeys, Page):
    name = "compare"
    title = "Compare"

    def __init__(self, session, parent: QWidget | None = None, *, seed: int | None = None):
        super().__init__(session, parent)
        self.rng = random.Random(seed)
        self.queue: AnnotationQueue | None = None
        self._seed = seed
        self.current: Comparison | None = None
        self.left_side = "a"
        self.side_ids: dict[str, int] = {}
        self.shown_at = 0.0
        self.criteria: dict[str, str | None] = {}
        self.note: str | None = None
        self.flag_state: dict | None = None
        self.undo_stack: list[tuple] = []
        self.fold = FoldedItem(session)

        # ---- filters and item line
        self.source_box = LazyCombo("all sources", lambda: sources(self.project))
        self.tag_box = LazyCombo("all tags", lambda: tags(self.project))
        for box in (self.source_box, self.tag_box):
            box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
            box.setMinimumWidth(120)
            box.activated.connect(self._filters_changed)
        self.item_label = QLabel()
        self.item_label.setStyleSheet("color: gray;")
        self.gap_label = QLabel()
        self.gap_label.setStyleSheet("color: #6a4ad0;")
        self.gap_label.setToolTip("How far apart a reward model scores the two responses: a small gap is a close "
                                  "call for the model, which is what makes your verdict informative. Which side it "
                                  "prefers is not shown.")
        for label in (self.item_label, self.gap_label):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top = QHBoxLayout()
        top.addWidget(QLabel("Source"))
        top.addWidget(self.source_box)
        top.addWidget(QLabel("Tag"))
        top.addWidget(self.tag_box)
        top.addWidget(self.gap_label, 1)
        top.addWidget(self.item_label, 1)

        # ---- prompt and responses
        first_chars = self.session.prefs.get("render/first_chars")
        self.prompt_pane = TextPane(first_chars=first_chars, plain_toggle=False)
        self.left_pane = TextPane(first_chars=first_chars, plain_key="Alt+L")
        self.right_pane = TextPane(first_chars=first_chars, plain_key="Alt+R")
        self.left_head, self.right_head = QLabel(), QLabel()
        cols = QSplitter(Qt.Orientation.Horizontal)
        for head, pane in ((self.left_head, self.left_pane), (self.right_head, self.right_pane)):
            head.setStyleSheet("font-weight: bold; font-size: 14px;")
            head.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            box = QWidget()
            box.setMinimumWidth(120)
            v = QVBoxLayout(box)
            v.setContentsMargins(0, 0, 0, 0)
            head_row = QHBoxLayout()
            head_row.addWidget(head, 1)
            head_row.addWidget(pane.plain_button)
            v.addLayout(head_row)
            v.addWidget(pane, 1)
            cols.addWidget(box)
        cols.setChildrenCollapsible(False)
        # The prompt box and the responses share the height through a splitter: drag it to read a long conversation.
        rows = QSplitter(Qt.Orientation.Vertical)
        rows.addWidget(self.prompt_pane)
        rows.addWidget(cols)
        rows.setChildrenCollapsible(False)
        rows.setStretchFactor(0, 1)
        rows.setStretchFactor(1, 3)
        rows.setSizes([170, 600])
        self.cols = cols
        for pane in (self.prompt_pane, self.left_pane, self.right_pane):
            pane.browser.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            pane.reveal_requested.connect(lambda: self.router.trigger("reveal"))

        # ---- criteria, note, flag bar, writer, feedback, buttons
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
        self.buttons: dict[str, QWidget] = {}
        verdict_row, action_row = QHBoxLayout(), QHBoxLayout()
        verdict_row.setSpacing(4)
        action_row.setSpacing(4)
        for action, text, short in VERDICT_BUTTONS + ACTION_BUTTONS:
            button = self.buttons[action] = key_button(self, action, text, short=short)
            (verdict_row if (action, text, short) in VERDICT_BUTTONS else action_row).addWidget(button, 1)
        self.progress = SessionProgress(session)
        action_row.addWidget(self.progress, 1)
        self.keys_hint = QLabel(
            "1/2/3 left much better/better/slightly · 4 tie · 5/6/7 right slightly/better/much better · X both bad · "
            "S skip · U undo · R reveal · C nothing harmful · F flag · W write · [ ] prompt · Alt+L/Alt+R plain text "
            "· G guidelines · ? all keys"
        )
        self.keys_hint.setWordWrap(True)
        self.keys_hint.setStyleSheet("color: gray;")
        self.empty_label = QLabel("The queue is empty: nothing left to compare with these filters.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.hide()
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)

        # Labels whose text changes on every item must not resize anything (a relayout per key press costs more
        # than the text itself), nor hold the page wider than a small window.
        for label in (self.feedback, self.criteria_label, self.keys_hint):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
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
        lay.addLayout(verdict_row)
        lay.addLayout(action_row)
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
        self.progress.update_value()
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
            self.fold.start(None)
            self.rows.hide()
            self.empty_label.show()
            self.item_label.setText("")
            self.gap_label.setText("")
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
        self.side_ids = {side: getattr(c, f"response_{stored_side(side, self.left_side)}") for side in ("left", "right")}
        self.fold.start(("comparison", c.id))
        self.fold.show(self.prompt_pane, conversation_markdown(prompt.messages),
                       flags=project.flags_for_prompt(c.prompt_id))
        self._show_last_turn()
        for side, pane, head in (("left", self.left_pane, self.left_head), ("right", self.right_pane, self.right_head)):
            rid = self.side_ids[side]
            flags = project.flags_for_response(rid)
            self.fold.show(pane, project.get_response(rid).content, prompt_tags=prompt.tags, flags=flags)
            head.setText(side_heading(side, flags))
        tags_text = ", ".join(prompt.tags)
        # The prompt's id, not the comparison's: a retest row has a new, out-of-order id that would unblind it.
        self.item_label.setText(f"prompt {c.prompt_id} · {prompt.source or 'no source'}" + (f" · {tags_text}" if tags_text else ""))
        gap = score_gap(project, self.side_ids["left"], self.side_ids["right"])
        self.gap_label.setText(f"reward-model score gap {gap.gap:.3g} ({gap.reward_model})" if gap else "")
        self._render_criteria()
        self.shown_at = time.monotonic()

    def _show_last_turn(self) -> None:
        """A multi-turn prompt opens at its last turn (the one the responses answer), now and once laid out."""
        if self.current is None or len(self.prompt.messages) < 2:
            return
        marker = turn_heading(self.prompt.messages[-1])
        self.prompt_pane.scroll_to_last(marker)
        shown = self.current.id
        QTimer.singleShot(0, lambda: self.current is not None and self.current.id == shown
                          and self.prompt_pane.scroll_to_last(marker))

    # ------------------------------------------------------------------ judging
    def _judge(self, verdict_side: str, strength: str | None) -> None:
        c = self.current
        if c is None:
            return
        if self.fold.folded:
            self.refuse(REVEAL_FIRST + ": press R, then judge.")
            return
        verdict = stored_verdict(verdict_side, self.left_side)
        criteria = {k: stored_verdict(v, self.left_side) for k, v in self.criteria.items() if v is not None}
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
            self.undo_stack.append(("skip", self.current.id))
            self.feedback.setText(f"Skipped #{self.current.id}. U brings it back.")
        self.show_next()

    def _back_to(self, item: Comparison) -> None:
        """Show an earlier item again; the one on screen now comes back right after it."""
        if self.current is not None and self.current.id != item.id:
            self.queue.put_back(self.current.id)
        self.show_item(item)

    def act_undo(self, _k: str) -> None:
        """Undo the last action, whatever it was: a judgment, a skip, a flag, a check or a written answer."""
        if not self.undo_stack:
            self.feedback.setText("Nothing to undo.")
            return
        entry = self.undo_stack.pop()
        kind = entry[0]
        if kind == "judge":
            undone = self.project.undo(entry[1])
            self.session.notify(judged=-1, pending=1, action=-1)
            self.feedback.setText(f"Undone: the judgment of #{entry[1]} was {undone.how}.")
            self._back_to(undone.item)
        elif kind == "skip":
            self.queue.unskip(entry[1])
            self.feedback.setText(f"Undone: the skip of #{entry[1]}; here it is again.")
            self._back_to(self.project.get_comparison(entry[1]))
        elif kind == "flag":
            how = self.project.retract("flag", entry[1])
            self.session.notify(flags=-1, action=-1)
            self.feedback.setText(f"Undone: flag {how}.")
            self._refresh_badges()
        elif kind == "check":
            self.undo_check(entry[1])
        elif kind == "write":
            _, demo_id, comparisons = entry
            self.project.retract_all([("comparison", cid) for cid in comparisons] + [("demonstration", demo_id)])
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
        if self.fold.folded:
            self.refuse(REVEAL_FIRST + ": a better answer beats both responses, so read them first (R).")
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
        self.feedback.setText(f"Saved your answer (demonstration {demo_id}); it beats both responses shown. "
                              "Now judge left against right.")

    # ------------------------------------------------------------------ safety

    # ------------------------------------------------------------------ flagging (keys in ui.flagging)
    def flag_targets(self) -> dict[str, tuple[str, int | None]]:
        return {"L": ("the left response", self.side_ids["left"]), "R": ("the right response", self.side_ids["right"]), "P": ("the prompt", None)}

    def flag_prompt_id(self) -> int | None:
        return self.current.prompt_id if self.current is not None else None

    def flag_done(self, flag_id: int, target: str) -> None:
        self.undo_stack.append(("flag", flag_id))
        self.fold.seen()
        self.feedback.setText(f"Flagged {target}. U undoes.")
        self._refresh_badges()

    def _refresh_badges(self) -> None:
        for side, head in (("left", self.left_head), ("right", self.right_head)):
            head.setText(side_heading(side, self.project.flags_for_response(self.side_ids[side])))

    # ------------------------------------------------------------------ reading
    def act_show_more(self, _k: str) -> None:
        for p in (self.left_pane, self.right_pane, self.prompt_pane):
            p.show_all()

    def act_scroll_down(self, _k: str) -> None:
        for p in (self.left_pane, self.right_pane):
            p.scroll_pages(1)

    def act_scroll_up(self, _k: str) -> None:
        for p in (self.left_pane, self.right_pane):
            p.scroll_pages(-1)

    def act_plain_left(self, _k: str) -> None:
        self.left_pane.toggle_plain()

    def act_plain_right(self, _k: str) -> None:
        self.right_pane.toggle_plain()
