"""Every keyboard shortcut of the window, in one table: (scope, keys, action, help).

Pages never bind keys themselves: :class:`KeyRouter` looks a key press up here and calls the page's handler named
by ``action``. The on-screen help (F1 or ?) is generated from this table, so it always lists every shortcut.
Scopes: ``global`` (anywhere in the window), one per page, and ``flag`` (while choosing a safety flag).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit, QTextEdit, QWidget


@dataclass(frozen=True)
class Binding:
    scope: str
    keys: tuple[str, ...]
    action: str
    help: str


def _b(scope: str, keys: str, action: str, help: str) -> Binding:
    return Binding(scope, tuple(k.strip() for k in keys.split(",")), action, help)


SHORTCUTS: tuple[Binding, ...] = (
    # ---- anywhere
    _b("global", "F1, ?", "show_help", "Show this list of shortcuts"),
    _b("global", "G, Ctrl+G", "toggle_guidelines", "Show or hide the guidelines panel (Ctrl+G also while typing)"),
    _b("global", "Ctrl+1", "page_overview", "Go to Overview"),
    _b("global", "Ctrl+2", "page_compare", "Go to Compare"),
    _b("global", "Ctrl+3", "page_rank", "Go to Rank"),
    _b("global", "Ctrl+4", "page_write", "Go to Write"),
    _b("global", "Ctrl+5", "page_history", "Go to History"),
    _b("global", "Ctrl+6", "page_dashboard", "Go to Dashboard"),
    _b("global", "Ctrl+7", "page_train", "Go to Train"),
    _b("global", "Ctrl+8", "page_runs", "Go to Runs"),
    _b("global", "Ctrl+9", "page_generate", "Go to Generate"),
    _b("global", "Ctrl+Shift+P", "page_playground", "Go to Playground"),
    _b("global", "Ctrl+Shift+E", "page_evaluation", "Go to Evaluation"),
    _b("global", "Ctrl+O", "open_project", "Open a project"),
    _b("global", "Ctrl+N", "new_project", "Create a project"),
    # ---- compare (left/right are screen sides; the window maps them to the responses shown there)
    _b("compare", "1", "left_strong", "Left is much better (strong)"),
    _b("compare", "2, A, Left", "left_clear", "Left is better (clear)"),
    _b("compare", "3", "left_slight", "Left is slightly better (slight)"),
    _b("compare", "4, T, Down", "tie", "Tie: equally good"),
    _b("compare", "5", "right_slight", "Right is slightly better (slight)"),
    _b("compare", "6, B, Right", "right_clear", "Right is better (clear)"),
    _b("compare", "7", "right_strong", "Right is much better (strong)"),
    _b("compare", "X, 0", "both_bad", "Both bad: neither should be shown to a user"),
    _b("compare", "H", "cycle_helpfulness", "Helpfulness: none → left → right → tie"),
    _b("compare", "M", "cycle_harmlessness", "Harmlessness: none → left → right → tie"),
    _b("compare", "O", "cycle_honesty", "Honesty: none → left → right → tie"),
    _b("compare", "S, Space", "skip", "Skip this item (it stays in the queue)"),
    _b("compare", "U, Ctrl+Z", "undo", "Undo the last action (judgment, skip, flag, check or written answer)"),
    _b("compare", "N", "note", "Add a note to this item (Enter saves, Esc cancels)"),
    _b("compare", "F", "flag", "Flag content: then L/R/P, a category number, a severity number"),
    _b("compare", "W", "write_better", "Write a better answer (Ctrl+Enter saves, Esc cancels)"),
    _b("compare", "C", "check_safe",
       "Checked, nothing harmful: the responses on screen (those not flagged) get every category recorded absent"),
    _b("compare", "R", "reveal", "Reveal hidden (flagged or red-team) content; a verdict needs it revealed"),
    _b("compare", "E", "show_more", "Show the rest of long responses"),
    _b("compare", "PgDown, J", "scroll_down", "Scroll both responses down"),
    _b("compare", "PgUp, K", "scroll_up", "Scroll both responses up"),
    _b("compare", "Shift+PgDown, Alt+PgDown, ]", "prompt_down", "Scroll the prompt down (it opens at its last turn)"),
    _b("compare", "Shift+PgUp, Alt+PgUp, [", "prompt_up", "Scroll the prompt up, to earlier turns"),
    _b("compare", "Alt+L", "plain_left", "Show the left response as plain text (again: as Markdown)"),
    _b("compare", "Alt+R", "plain_right", "Show the right response as plain text (again: as Markdown)"),
    _b("compare", "Ctrl+Return, Ctrl+Enter", "save_answer", "Save the better answer being written"),
    _b("compare", "Esc", "cancel_edit", "Close the note or answer editor without saving"),
    # ---- while flagging (after F)
    _b("flag", "L", "target_left", "Flag the left response"),
    _b("flag", "R", "target_right", "Flag the right response"),
    _b("flag", "P", "target_prompt", "Flag the prompt"),
    _b("flag", "1, 2, 3, 4, 5, 6, 7, 8, 9, 0", "choose_digit",
       "On Rank: the response to flag; then the category number; then severity 1 low / 2 medium / 3 high"),
    _b("flag", "Esc", "cancel", "Cancel flagging"),
    # ---- rank
    _b("rank", "1, 2, 3, 4, 5, 6, 7, 8, 9", "pick", "Put this response next in the order (best first)"),
    _b("rank", "=", "tie_next", "The next response picked ties with the previous one"),
    _b("rank", "Backspace", "unpick", "Take back the last response picked"),
    _b("rank", "Return, Enter", "submit", "Save the ranking and go to the next prompt"),
    _b("rank", "S", "skip", "Skip this prompt"),
    _b("rank", "U, Ctrl+Z", "undo", "Undo the last action (ranking, skip or check)"),
    _b("rank", "C", "check_safe",
       "Checked, nothing harmful: the responses on screen (those not flagged) get every category recorded absent"),
    _b("rank", "R", "reveal", "Reveal hidden content; ranking needs it revealed"),
    _b("rank", "Shift+PgDown, Alt+PgDown, ]", "prompt_down", "Scroll the prompt down (it opens at its last turn)"),
    _b("rank", "Shift+PgUp, Alt+PgUp, [", "prompt_up", "Scroll the prompt up, to earlier turns"),
    _b("rank", "F", "flag", "Flag content: then a response number or P, a category number, a severity number"),
    # ---- write
    _b("write", "Ctrl+Return, Ctrl+Enter", "save", "Save the demonstration and go to the next prompt"),
    _b("write", "Ctrl+Right", "skip", "Skip this prompt"),
    _b("write", "Ctrl+E", "edit_response",
       "Start from an existing response (over a draft: asks first, Ctrl+E again replaces, Ctrl+Z brings it back)"),
    _b("write", "Ctrl+Z", "undo_text", "Undo typing or a replaced draft (in the editor)"),
    _b("write", "Ctrl+R", "reveal", "Reveal a hidden (flagged or red-team) prompt"),
    _b("write", "Alt+PgDown", "prompt_down", "Scroll the prompt down (it opens at its last turn)"),
    _b("write", "Alt+PgUp", "prompt_up", "Scroll the prompt up, to earlier turns"),
    # ---- history
    _b("history", "Ctrl+F", "focus_search", "Search"),
    _b("history", "Return, Enter", "open_selected", "Open the selected item"),
    _b("history", "Del", "retract_selected", "Retract (or delete) the item shown (press twice)"),
    _b("history", "R", "reveal", "Reveal hidden (flagged or red-team) content"),
)

SCOPE_TITLES = {
    "global": "Anywhere",
    "compare": "Compare",
    "flag": "Compare and Rank, while flagging (after F)",
    "rank": "Rank",
    "write": "Write",
    "history": "History",
}


def bindings(scope: str) -> list[Binding]:
    return [b for b in SHORTCUTS if b.scope == scope]


def key_names(event: QKeyEvent) -> list[str]:
    """The names a key press can match in the table: its QKeySequence text and, for a printed character
    typed without Ctrl/Alt, the character itself (so "?" matches Shift+/ on any layout)."""
    mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
    key = event.key()
    if key in (Qt.Key.Key_Shift, Qt.Key.Key_Control, Qt.Key.Key_Alt, Qt.Key.Key_Meta):
        return []
    names = [QKeySequence(int(mods.value) | key).toString()]
    text = event.text()
    if text and text.isprintable() and not mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier):
        names.append(text.upper() if text.isalpha() else text)
    if key == Qt.Key.Key_Escape:
        names.append("Esc")
    return names


def _is_text_input(w: QObject) -> bool:
    if isinstance(w, (QLineEdit, QAbstractSpinBox)):
        return True
    if isinstance(w, (QPlainTextEdit, QTextEdit)):
        return not w.isReadOnly()
    return isinstance(w, QComboBox) and w.isEditable()


def _plain(name: str) -> bool:
    """A key without Ctrl/Alt and not a function key: it types text into an editor, so editors keep it."""
    return not any(m in name for m in ("Ctrl+", "Alt+", "Meta+")) and not (name.startswith("F") and name[1:].isdigit()) and name != "Esc"


class _Dispatcher(QObject):
    """The one application event filter of every router: each event of the window passes one Python call here
    (not one per page), and only key presses go on to the routers, the most recently made first."""

    def __init__(self) -> None:
        super().__init__()
        self.routers: list[KeyRouter] = []

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != _KEY_PRESS or not isinstance(obj, QWidget):
            return False
        for router in reversed(self.routers):
            if router.route(obj, event):  # type: ignore[arg-type]
                return True
        return False


_KEY_PRESS = QEvent.Type.KeyPress
_DISPATCHER: _Dispatcher | None = None


def _dispatcher() -> _Dispatcher:
    global _DISPATCHER
    if _DISPATCHER is None:
        from PySide6.QtWidgets import QApplication

        _DISPATCHER = _Dispatcher()
        QApplication.instance().installEventFilter(_DISPATCHER)
    return _DISPATCHER


class KeyRouter(QObject):
    """Sends key presses inside ``root`` to handlers looked up in the table (through one application event filter
    shared by every router); it stops when ``root`` is deleted.

    ``scopes()`` gives the active scopes, most specific first; ``handler(action)`` returns a callable or None.
    Inside a text editor only keys with Ctrl/Alt (and F-keys, Esc) are routed, so typing stays typing.
    """

    def __init__(self, root: QWidget, scopes: Callable[[], list[str]], handler: Callable[[str], Callable[[str], None] | None]):
        super().__init__(root)
        self.root, self.scopes, self.handler = root, scopes, handler
        routers = _dispatcher().routers
        routers.append(self)
        root.destroyed.connect(lambda *_: self in routers and routers.remove(self))

    def trigger(self, action: str, key: str | None = None) -> None:
        """Run ``action`` exactly as its key does (the buttons beside the keys come here): ``key`` is the key name
        the handler receives, by default the first key bound to the action."""
        bound = next((b for scope in self.scopes() for b in bindings(scope) if b.action == action), None)
        fn = self.handler(action) if bound is not None else None
        if fn is None:
            return  # not active now (e.g. while flagging): the key would do nothing either
        self._run(fn, key if key is not None else bound.keys[0])

    def _run(self, fn: Callable[[str], None], name: str) -> None:
        """Run a handler; a refusal from the core (WorkbenchError) becomes a message in the status bar, not a
        traceback on stderr, and the window carries on."""
        from workbench.errors import WorkbenchError

        try:
            fn(name)
        except WorkbenchError as e:
            window = self.root.window()
            bar = getattr(window, "statusBar", None)
            if callable(bar):
                bar().showMessage(str(e), 10_000)
            else:
                print(str(e), file=sys.stderr)

    def route(self, obj: QWidget, event: QKeyEvent) -> bool:
        """Handle a key press on ``obj`` when it lies inside this router's root; True when a handler took it."""
        if obj is not self.root and not self.root.isAncestorOf(obj):
            return False
        names = key_names(event)  # type: ignore[arg-type]
        if not names:
            return False
        editing = _is_text_input(obj)
        for scope in self.scopes():
            for b in bindings(scope):
                for name in names:
                    if name in b.keys and not (editing and _plain(name)):
                        fn = self.handler(b.action)
                        if fn is not None:
                            self._run(fn, name)
                            return True
        return False
