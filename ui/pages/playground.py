"""Playground: chat with the base model and with a tuned adapter side by side, tokens streaming in as they are
sampled.

The page starts one long-lived worker job (stage ``playground``, :mod:`engine.jobs.playground`) that loads the
model once; each message goes to it as a ``chat`` command on the worker's stdin, once per side with that side's own
history, and the replies stream back as token events. Nothing here is stored in the project: it is for trying a
model out.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.configs import GenerateConfig
from workbench.jobs.client import Outcome
from workbench.jobs.protocol import Event, EventType

from ..engine_client import EngineRun, run_manager
from ..model_picker import ModelPicker
from .base import Page


class ChatPane(QWidget):
    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel(f"<b>{title}</b>")
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.speed = QLabel()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.title)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.speed)
        self.history: list[dict[str, str]] = []
        self.partial = ""

    def add_user(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})
        self._append(("\n\n" if self.view.toPlainText() else "") + f"You: {text}\n\nModel: ")
        self.partial = ""

    def add_token(self, piece: str) -> None:
        self.partial += piece
        self._append(piece)

    def finish(self, text: str, tokens: int, tps: float) -> None:
        self.history.append({"role": "assistant", "content": text})
        self.partial = ""
        self.speed.setText(f"{tokens} tokens · {tps:.1f} tokens/s")

    def _append(self, text: str) -> None:
        cur = self.view.textCursor()
        cur.movePosition(QTextCursor.MoveOperation.End)
        cur.insertText(text)
        self.view.setTextCursor(cur)
        self.view.ensureCursorVisible()

    def clear(self) -> None:
        self.view.clear()
        self.history.clear()
        self.speed.clear()


class PlaygroundPage(Page):
    name = "playground"
    title = "Playground"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.manager = run_manager(session)
        self.job: EngineRun | None = None
        self.ready = False
        self.sides: list[str] = []
        self.chat_id = 0
        self.waiting: set[tuple[int, str]] = set()
        self.last_outcome: Outcome | None = None

        self.model = ModelPicker("Model and adapter (the adapter's side shows beside the base)")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.7)
        self.temperature.setToolTip("Randomness of sampling (0: always the likeliest token)")
        self.max_new = QSpinBox()
        self.max_new.setRange(1, 4096)
        self.max_new.setValue(200)
        self.max_new.setToolTip("Longest reply, in tokens")
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load)
        self.unload_button = QPushButton("Unload")
        self.unload_button.clicked.connect(self.unload)
        self.unload_button.setEnabled(False)
        self.state = QLabel("Load a model to chat with it.")
        self.state.setWordWrap(True)
        self.base_pane = ChatPane("Base")
        self.tuned_pane = ChatPane("Tuned (base + adapter)")
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Type a message; Ctrl+Enter sends it to both sides.")
        self.input.setMaximumHeight(90)
        self.send_button = QPushButton("Send (Ctrl+Enter)")
        self.send_button.clicked.connect(self.send)
        self.send_button.setEnabled(False)
        self.clear_button = QPushButton("New chat")
        self.clear_button.clicked.connect(self.new_chat)
        QShortcut(QKeySequence("Ctrl+Return"), self.input, activated=self.send)

        top = QHBoxLayout()
        top.addWidget(self.model, 2)
        side = QVBoxLayout()
        row = QHBoxLayout()
        row.addWidget(QLabel("temperature"))
        row.addWidget(self.temperature)
        row.addWidget(QLabel("max tokens"))
        row.addWidget(self.max_new)
        side.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.load_button)
        row.addWidget(self.unload_button)
        side.addLayout(row)
        side.addWidget(self.state)
        top.addLayout(side, 1)
        panes = QSplitter(Qt.Orientation.Horizontal)
        panes.addWidget(self.base_pane)
        panes.addWidget(self.tuned_pane)
        bottom = QHBoxLayout()
        bottom.addWidget(self.input, 1)
        col = QVBoxLayout()
        col.addWidget(self.send_button)
        col.addWidget(self.clear_button)
        bottom.addLayout(col)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(panes, 1)
        lay.addLayout(bottom)

    def activate(self) -> None:
        super().activate()
        self.model.fill_adapters(self.project)

    # ------------------------------------------------------------------ the job
    def load(self) -> None:
        self.unload()
        base, adapter = self.model.value()
        cfg = GenerateConfig(base_model=base, adapter_from=adapter, temperature=self.temperature.value(),
                             max_new_tokens=self.max_new.value(), name="playground")
        self.ready = False
        self.job = self.manager.job("playground", cfg)
        self.job.event.connect(self._on_event)
        self.job.finished_run.connect(self._on_finished)
        self.job.start()
        self.tuned_pane.setEnabled(bool(adapter))
        self.state.setText("Loading the model in a worker process…")
        self.load_button.setEnabled(False)
        self.unload_button.setEnabled(True)

    def unload(self) -> None:
        if self.job is not None and self.job.isRunning():
            if not self.job.send_command("stop"):
                self.job.cancel(timeout_s=10)
        self.ready = False
        self.send_button.setEnabled(False)

    def send(self) -> bool:
        text = self.input.toPlainText().strip()
        if not text or not self.ready or self.job is None:
            return False
        self.chat_id += 1
        sent = False
        for side, pane in (("base", self.base_pane), ("tuned", self.tuned_pane)):
            if side not in self.sides:
                continue
            pane.add_user(text)
            sent |= self.job.send_command(
                "chat", id=self.chat_id, messages=pane.history, sides=[side],
                temperature=self.temperature.value(), max_new_tokens=self.max_new.value())
            self.waiting.add((self.chat_id, side))
        self.input.clear()
        self.send_button.setEnabled(False)
        return sent

    def new_chat(self) -> None:
        self.base_pane.clear()
        self.tuned_pane.clear()

    def _on_event(self, ev: Event) -> None:
        if ev.type != EventType.LOG:
            return
        d = ev.data
        level = d.get("level")
        pane = self.tuned_pane if d.get("side") == "tuned" else self.base_pane
        if level == "ready":
            self.ready = True
            self.sides = list(d.get("sides") or ["base"])
            self.state.setText(f"Ready: {d.get('message', '')}")
            self.send_button.setEnabled(True)
        elif level == "token":
            pane.add_token(str(d.get("message", "")))
        elif level == "reply":
            pane.finish(str(d.get("text", "")), int(d.get("tokens") or 0), float(d.get("tokens_per_s") or 0.0))
            self.waiting.discard((d.get("chat"), d.get("side")))
            if not self.waiting:
                self.send_button.setEnabled(True)
        elif level in ("warning", "error"):
            self.state.setText(f"{level}: {d.get('message')}")

    def _on_finished(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        self.ready = False
        self.job = None
        self.send_button.setEnabled(False)
        self.load_button.setEnabled(True)
        self.unload_button.setEnabled(False)
        if outcome.status == "failed":
            self.state.setText(f"<span style='color:#b00'>The model stopped: {outcome.error}</span>")
        else:
            self.state.setText("Model unloaded.")
