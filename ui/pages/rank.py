"""Rank: up to nine responses to one prompt, ordered best first by number keys (and by drag), ties allowed.

The order list always holds every response: pressing a number moves that response to the next place after
those already placed; "=" makes the next one tie with the previous place; Backspace takes the last one back;
dragging a row reorders places freely. Enter saves the ranking (1 = best, equal ranks are ties). Each key has a
button beside it that runs the same handler. Harmful responses are folded (:mod:`ui.folding`) and nothing is placed
or saved until they are revealed.
"""

from __future__ import annotations

import random
import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.queue import next_rank_prompt

from ..flagging import FlaggingMixin
from ..folding import REVEAL_FIRST, FoldedItem, ReadingKeys
from ..navigation import RankEmptyState
from ..render import TextPane
from ..widgets import SessionProgress, conversation_markdown, key_button, turn_heading
from .base import Page

MAX_RESPONSES = 9


class RankPage(FlaggingMixin, ReadingKeys, Page):
    name = "rank"
    title = "Rank"

    def __init__(self, session, parent: QWidget | None = None, *, seed: int | None = None):
        super().__init__(session, parent)
        self.rng = random.Random(seed)
        self.prompt_id: int | None = None
        self.response_ids: list[int] = []      # label n (1-based) → response_ids[n - 1]
        self.groups: list[list[int]] = []       # places, best first; each a list of labels (ties share a place)
        self.placed = 0                         # places fixed by keys so far
        self.tie_next = False
        self.skipped: set[int] = set()
        self.undo_stack: list[tuple] = []
        self.fold = FoldedItem(session)

        self.prompt_pane = TextPane(plain_toggle=False)
        self.prompt_pane.browser.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.prompt_pane.reveal_requested.connect(lambda: self.router.trigger("reveal"))
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.panes: list[TextPane] = []
        self.heads: list[QLabel] = []
        self.order = QListWidget()
        self.order.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.order.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.order.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.order.model().rowsMoved.connect(self._dragged)
        self.order.setMinimumWidth(220)
        self.order.setMaximumWidth(340)
        order_box = QWidget()
        ov = QVBoxLayout(order_box)
        ov.setContentsMargins(0, 0, 0, 0)
        order_help = QLabel("<b>Order</b>, best first.<br>Keys 1–9 place a response · = ties the next with the previous · Backspace takes back · Enter saves · S skips · or drag rows")
        order_help.setWordWrap(True)
        ov.addWidget(order_help)
        ov.addWidget(self.order, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.grid_host)
        split.addWidget(order_box)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        split.setSizes([900, 280])
        vsplit = QSplitter(Qt.Orientation.Vertical)
        vsplit.addWidget(self.prompt_pane)
        vsplit.addWidget(split)
        vsplit.setStretchFactor(1, 4)
        vsplit.setSizes([140, 600])
        self.body = vsplit
        self.feedback = QLabel()
        self.flag_bar = QLabel()
        self.flag_bar.setWordWrap(True)
        self.flag_bar.setStyleSheet("background: #fde2e2; color: black; padding: 6px;")
        self.flag_bar.hide()
        self.empty_label = RankEmptyState()  # points to Generate when no prompt has three responses
        self.empty_label.hide()
        self.buttons: dict[str, QWidget] = {}
        buttons = QHBoxLayout()
        for action, text, short, shown in (
            ("submit", "Save", "Save", "Enter"), ("unpick", "Take back", "Back", "⌫"), ("tie_next", "Tie next", "Tie", None),
            ("skip", "Skip", "Skip", None), ("undo", "Undo", "Undo", None), ("reveal", "Reveal", "Reveal", None),
            ("check_safe", "Nothing harmful", "Safe", None), ("flag", "Flag", "Flag", None),
        ):
            button = self.buttons[action] = key_button(self, action, text, short=short, shown_key=shown)
            buttons.addWidget(button, 1)
        self.progress = SessionProgress(session)
        buttons.addWidget(self.progress)
        self.feedback.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay = QVBoxLayout(self)
        lay.addWidget(vsplit, 1)
        lay.addWidget(self.empty_label, 1)
        lay.addWidget(self.flag_bar)
        lay.addLayout(buttons)
        lay.addWidget(self.feedback)
        self._loaded = False

    def activate(self) -> None:
        super().activate()
        if not self._loaded:
            self._loaded = True
            self.show_next()

    # ------------------------------------------------------------------ loading
    def show_next(self) -> None:
        after = self.prompt_id or 0
        pid = next_rank_prompt(self.project, after, exclude=self.skipped)
        if pid is None and (after or self.skipped):
            pid = next_rank_prompt(self.project, 0, exclude=self.skipped) or next_rank_prompt(self.project, 0)
            self.skipped.clear()
        self.show_prompt(pid)

    def show_prompt(self, pid: int | None) -> None:
        self.prompt_id = pid
        for w in self.heads:
            w.deleteLater()
        self.panes, self.heads = [], []
        self.groups, self.placed, self.tie_next = [], 0, False
        self.flag_state = None
        self.flag_bar.hide()
        self.fold.start(("prompt", pid))
        if pid is None:
            self.body.hide()
            self.empty_label.refresh(self.project)
            self.empty_label.show()
            self.order.clear()
            return
        self.body.show()
        self.empty_label.hide()
        prompt = self.project.get_prompt(pid)
        responses = self.project.responses_for(pid)[:MAX_RESPONSES]
        self.rng.shuffle(responses)  # shown order carries no information about origin
        self.response_ids = [r.id for r in responses]
        self.snippets = [" ".join(r.content.split())[:40] for r in responses]
        self.fold.show(self.prompt_pane, conversation_markdown(prompt.messages),
                       flags=self.project.flags_for_prompt(pid))
        if len(prompt.messages) > 1:  # a multi-turn prompt opens at its last turn
            self.prompt_pane.scroll_to_last(turn_heading(prompt.messages[-1]))
        cols = 3 if len(responses) > 4 else 2
        for i, r in enumerate(responses):
            head = QLabel(f"<b>[{i + 1}]</b>")
            place = key_button(self, "pick", "Place next", key=str(i + 1), short="Place")
            place.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
            pane = TextPane()
            pane.browser.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            pane.reveal_requested.connect(lambda: self.router.trigger("reveal"))
            self.fold.show(pane, r.content, prompt_tags=prompt.tags, flags=self.project.flags_for_response(r.id))
            box = QWidget()
            v = QVBoxLayout(box)
            v.setContentsMargins(2, 2, 2, 2)
            head_row = QHBoxLayout()
            head_row.addWidget(head)
            head_row.addStretch(1)
            head_row.addWidget(pane.plain_button)
            head_row.addWidget(place)
            v.addLayout(head_row)
            v.addWidget(pane, 1)
            self.grid.addWidget(box, i // cols, i % cols)
            self.panes.append(pane)
            self.heads.append(box)
        self.groups = [[n] for n in range(1, len(responses) + 1)]
        self._render_order()
        self.shown_at = time.monotonic()

    def _render_order(self) -> None:
        self.order.blockSignals(True)
        self.order.clear()
        for place, group in enumerate(self.groups):
            labels = " = ".join(f"[{n}] {self.snippets[n - 1]}" + ("…" if len(self.snippets[n - 1]) == 40 else "") for n in group)
            fixed = "" if place < self.placed else "   ·  not placed yet"
            item = QListWidgetItem(f"{place + 1}.  {labels}{fixed}")
            item.setData(Qt.ItemDataRole.UserRole, list(group))
            self.order.addItem(item)
        self.order.blockSignals(False)

    # ------------------------------------------------------------------ keys
    def act_pick(self, key: str) -> None:
        n = int(key)
        if self.prompt_id is None or not 1 <= n <= len(self.response_ids):
            return
        if self.fold.folded:
            self.refuse(REVEAL_FIRST + ": press R to read every response, then rank.")
            return
        if any(n in g for g in self.groups[: self.placed]):
            return  # already placed: Backspace takes it back
        for g in self.groups:
            if n in g:
                g.remove(n)
        self.groups = [g for g in self.groups if g]
        if self.tie_next and self.placed:
            self.groups[self.placed - 1].append(n)
        else:
            self.groups.insert(self.placed, [n])
            self.placed += 1
        self.tie_next = False
        self._render_order()

    def act_tie_next(self, _k: str) -> None:
        self.tie_next = self.placed > 0

    def act_unpick(self, _k: str) -> None:
        if not self.placed:
            return
        group = self.groups[self.placed - 1]
        n = group.pop()
        if not group:
            self.groups.pop(self.placed - 1)
            self.placed -= 1
        self.groups.insert(self.placed, [n])
        self._render_order()

    def _dragged(self, *_: object) -> None:
        self.groups = [list(self.order.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.order.count())]
        self.placed = len(self.groups)
        self._render_order()

    def ranks(self) -> dict[int, int]:
        """Response id → rank (1 best; ties share a rank) from the current order."""
        return {self.response_ids[n - 1]: place + 1 for place, g in enumerate(self.groups) for n in g}

    def act_submit(self, _k: str) -> None:
        if self.prompt_id is None:
            return
        if self.fold.folded:
            self.refuse(REVEAL_FIRST + ": press R to read every response, then save the ranking.")
            return
        spent = int((time.monotonic() - self.shown_at) * 1000)
        rid = self.project.add_ranking(self.prompt_id, self.ranks(), time_spent_ms=spent)
        self.undo_stack.append(("ranking", rid))
        self.session.notify(rankings=1, action=1)
        self.feedback.setText(f"Saved ranking {rid}. U undoes.")
        self.show_next()

    def act_skip(self, _k: str) -> None:
        if self.prompt_id is not None:
            self.skipped.add(self.prompt_id)
            self.undo_stack.append(("skip", self.prompt_id))
            self.feedback.setText(f"Skipped prompt {self.prompt_id}. U brings it back.")
        self.show_next()

    def act_undo(self, _k: str) -> None:
        """Undo the last action, whatever it was: a saved ranking, a skip or a check."""
        if not self.undo_stack:
            self.feedback.setText("Nothing to undo.")
            return
        kind, value = self.undo_stack.pop()
        if kind == "ranking":
            pid = self.project.ranking_prompt_id(value)
            how = self.project.retract("ranking", value)
            self.session.notify(rankings=-1, action=-1)
            self.feedback.setText(f"Undone: ranking {value} {how}.")
            self.show_prompt(pid)
        elif kind == "skip":
            self.skipped.discard(value)
            self.feedback.setText(f"Undone: the skip of prompt {value}; here it is again.")
            self.show_prompt(value)
        elif kind == "check":
            self.undo_check(value)


    # ------------------------------------------------------------------ flagging (keys in ui.flagging)
    def flag_targets(self) -> dict[str, tuple[str, int | None]]:
        targets = {str(i + 1): (f"response [{i + 1}]", rid) for i, rid in enumerate(self.response_ids)}
        targets["P"] = ("the prompt", None)
        return targets

    def flag_prompt_id(self) -> int | None:
        return self.prompt_id

    def flag_done(self, flag_id: int, target: str) -> None:
        self.feedback.setText(f"Flagged {target}. (History retracts flags.)")
        self.fold.seen()
