"""The job protocol: events as JSON lines, commands, terminal events."""

from __future__ import annotations

import math

import pytest

from workbench.jobs import protocol
from workbench.jobs.protocol import Event, EventType


def test_event_round_trip():
    ev = protocol.metrics(3, {"train/loss": 1.25, "eval/loss": math.inf})
    line = ev.to_json()
    assert "\n" not in line
    back = Event.from_json(line)
    assert back.type is EventType.METRICS and back.step == 3 and back.data["train/loss"] == 1.25
    assert back.data["eval/loss"] == math.inf


@pytest.mark.parametrize(
    "ev, terminal",
    [
        (protocol.status("running"), False),
        (protocol.status("cancelled"), True),
        (protocol.error("boom"), True),
        (Event(EventType.DONE, {"output": "x"}), True),
        (protocol.progress(1, 10), False),
        (protocol.log("hi"), False),
    ],
)
def test_terminal_events(ev, terminal):
    assert ev.terminal is terminal


def test_non_events_are_refused():
    for line in ("hello", "[1, 2]", '{"no": "type"}', '{"type": "nonsense"}'):
        with pytest.raises(ValueError):
            Event.from_json(line)


def test_commands():
    assert protocol.parse_command(protocol.command_line("cancel")) == ("cancel", {})
    assert protocol.parse_command("cancel\n") == ("cancel", {})
    assert protocol.parse_command("   ") is None
    assert protocol.parse_command("{not json") is None
    chat = protocol.command_line("chat", id=3, messages=[{"role": "user", "content": "héllo"}])
    assert protocol.parse_command(chat) == ("chat", {"id": 3, "messages": [{"role": "user", "content": "héllo"}]})
    with pytest.raises(ValueError):
        protocol.command_line("two words")
