"""Folding of harmful content, the same on every page that shows prompts or responses (Compare, Rank, Write,
History): one :class:`FoldedItem` per page holds the panes of the item on screen.

- A pane is folded when its content is harmful (flagged, or its prompt is tagged red-team:
  :meth:`ui.session.Session.harm_reason`) and folding is switched on; its text is not even in the document.
- Revealing (R, or the fold's button) reveals every pane of the item at once and counts the item once toward the
  session's "Harmful seen"; so does showing harmful content with folding switched off, and flagging it.
- A verdict, rank or label on the item is refused while any of its panes is folded (:attr:`FoldedItem.folded`):
  nothing is judged unseen.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from .render import TextPane
from .session import Session

REVEAL_FIRST = "Reveal the hidden content first (R): nothing is judged unseen"


class FoldedItem:
    """The panes showing one item and whether any of them is still folded."""

    def __init__(self, session: Session):
        self.session = session
        self.item: Hashable = None
        self.panes: list[TextPane] = []

    def start(self, item: Hashable) -> None:
        """A new item is about to be shown (``("comparison", 12)``, ``("prompt", 3)``, ...)."""
        self.item = item
        self.panes = []

    def show(
        self,
        pane: TextPane,
        text: str,
        *,
        prompt_tags: Sequence[str] = (),
        flags: Sequence[tuple] = (),
        markdown: bool | None = None,
    ) -> None:
        """Put ``text`` into ``pane``, folded when it is harmful and folding is on."""
        harm = self.session.harm_reason(list(prompt_tags), list(flags))
        fold = harm if self.session.prefs.get("safety/hide_flagged") else None
        md = bool(self.session.prefs.get("render/markdown")) if markdown is None else markdown
        pane.set_text(text, markdown=md, fold_reason=fold)
        if pane not in self.panes:
            self.panes.append(pane)
        if harm and not fold:
            self.seen()  # shown unfolded: seen as surely as revealed

    @property
    def folded(self) -> bool:
        return any(p.folded for p in self.panes)

    def reveal(self) -> bool:
        """Reveal every folded pane of the item; True when something was folded (and the exposure was counted)."""
        folded = [p for p in self.panes if p.folded]
        for p in folded:
            p.reveal()
        if folded:
            self.seen()
        return bool(folded)

    def seen(self) -> None:
        """The item's harmful content was seen (revealed, shown, or flagged): counted once per item and session."""
        if self.item is not None:
            self.session.saw_harmful(self.item)


class ReadingKeys:
    """The keys every page with a :class:`FoldedItem` (``fold``) and a prompt pane (``prompt_pane``) shares:
    reveal, and scroll the prompt. The page has a ``feedback`` label."""

    fold: FoldedItem
    prompt_pane: TextPane

    def act_reveal(self, _k: str) -> None:
        if self.fold.reveal():
            self.feedback.setText("Revealed. It counts toward Harmful seen.")

    def act_prompt_down(self, _k: str) -> None:
        self.prompt_pane.scroll_pages(1)

    def act_prompt_up(self, _k: str) -> None:
        self.prompt_pane.scroll_pages(-1)
