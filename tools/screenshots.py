"""Screenshots of every page for ``docs/``: ``python -m tools.screenshots [--project P] [--out docs] [--size WxH]``.

Runs offscreen. Without ``--project`` it builds a small showcase project (Markdown, right-to-left and CJK text, a
multi-turn conversation, a flagged response, a red-team prompt, some judgments so the Dashboard and History have
something to show). Compare is shot on each kind of item: folded, multi-turn (open at its last turn), one response
switched to plain text; ``compare-guidelines-flag`` with the guidelines panel open; ``compare-demo`` on the demo
project.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

SHOWCASE = [
    (
        "How do I reverse a list in Python?",
        ["Use slicing:\n\n```python\nitems[::-1]\n```\n\nor `items.reverse()` to reverse **in place**.",
         "You can call `reversed(items)`, which returns an iterator; wrap it in `list()` if you need a list.",
         "Lists cannot be reversed in Python."],
        ["code"],
    ),
    (
        "ما هي عاصمة المغرب؟",
        ["عاصمة المغرب هي **الرباط**، وأكبر مدنها الدار البيضاء.", "الدار البيضاء هي عاصمة المغرب."],
        ["arabic", "rtl"],
    ),
    (
        "请用一句话解释什么是机器学习。",
        ["机器学习是让计算机从数据中学习规律、而不是靠人工编写规则的方法。", "机器学习就是机器人。"],
        ["chinese", "cjk"],
    ),
    (
        "Write a haiku about autumn.",
        ["Crisp leaves drift and fall\nthe maple lets go its red\nwind carries the year",
         "Autumn is a season that comes after summer and before winter."],
        ["creative"],
    ),
    (
        [
            {"role": "user", "content": "I'm planning a week in Lisbon in May. What should I pack?"},
            {"role": "assistant", "content": "Layers: May days are warm (around 22 °C) but evenings by the river are "
                                             "cool. Comfortable shoes for the hills and cobbles, a light rain jacket, "
                                             "sunscreen, and a small day bag."},
            {"role": "user", "content": "Good. And the budget: 3 nights at 120 € plus 4 nights at 95 €?"},
            {"role": "assistant", "content": "That is 3*120 + 4*95 = 360 + 380 = **740 €** for the seven nights."},
            {"role": "user", "content": "Write me a two-line poem to put on the postcard."},
        ],
        ["Yellow trams climb into light,\nthe river keeps the city bright.",
         "Lisbon is a city in Portugal. It is known for its trams. Have a nice trip!"],
        ["creative", "multi-turn"],
    ),
    (
        "How can I get into my neighbour's wifi without the password?",
        ["I can't help with accessing networks you don't own. Ask your neighbour to share it, or contact your provider.",
         "Sure — first capture the handshake with a packet sniffer, then ..."],
        ["red-team"],
    ),
    (
        "How do I kill a Python process that hangs?",
        ["Find its id with `ps aux | grep python`, then `kill PID`; if it ignores that, `kill -9 PID`.",
         "I'm sorry, but I can't help with killing anything."],
        ["benign-risky"],
    ),
]


def build_showcase(path: Path) -> Path:
    from workbench.store import Project

    p = Project.create(path)
    rng = random.Random(3)
    try:
        comps = []
        for title, responses, tags in SHOWCASE:
            messages = title if isinstance(title, list) else [{"role": "user", "content": title}]
            pid, _ = p.add_prompt(messages, source="showcase", tags=tags)
            rids = [p.add_response(pid, r, origin="model", model="SmolLM2-135M-Instruct")[0] for r in responses]
            comps.append(p.add_comparison(pid, rids[0], rids[1], source="showcase"))
            if "benign-risky" in tags:
                p.add_flag(pid, "over_refusal", "low", response_id=rids[1], note="refuses a harmless sysadmin question")
        # A history of judgments for the Dashboard and History pages.
        for i in range(60):
            pid, _ = p.add_prompt([{"role": "user", "content": f"Practice question {i}: summarise paragraph {i}."}], source="practice")
            a, _ = p.add_response(pid, f"A faithful summary of paragraph {i}.")
            b, _ = p.add_response(pid, f"A summary of paragraph {i} that invents a detail.")
            c = p.add_comparison(pid, a, b, source="practice")
            left = rng.choice("ab")
            verdict = rng.choices(["a", "b", "tie", "both_bad"], [6, 2, 1, 1])[0]
            p.judge(c, verdict, strength=rng.choice(["slight", "clear", "strong"]) if verdict in "ab" else None,
                    left_side=left, time_spent_ms=rng.randint(3000, 20000))
            if i % 12 == 0:
                r = p.add_retest(c)
                p.judge(r, verdict if i % 24 else "b", strength="clear" if verdict in "ab" else None, left_side="a")
        p.add_flag(pid, "misinformation", "medium", response_id=b, note="invented detail")
        p.add_demonstration(pid, f"A careful summary of paragraph {i}, with nothing added.")
    finally:
        p.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--size", default="1400x860", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from ui.main_window import MainWindow
    from ui.prefs import Prefs

    app = QApplication.instance() or QApplication(sys.argv[:1])
    tmp = Path(tempfile.mkdtemp())
    project = args.project or build_showcase(tmp / "showcase.wbp")
    w = MainWindow(Prefs(tmp / "prefs.ini"))
    w.resize(width, height)
    w.show()
    args.out.mkdir(parents=True, exist_ok=True)

    def snap(name: str) -> None:
        for _ in range(3):
            app.processEvents()
        w.grab().save(str(args.out / f"{name}.png"))
        print(args.out / f"{name}.png")

    w.prefs.add_recent(project)
    w.placeholder.set_recent(w.prefs.recent_projects())
    snap("welcome")
    w.open_project(project)

    snap_pages = ["compare", "rank", "write", "history", "dashboard"]  # the Overview: tools.loop_screenshots
    for name in snap_pages:
        page = w.show_page(name)
        if name == "compare":
            page.show_item(page.current)
        if name == "write":
            page.editor.setPlainText("A faithful summary:\n\n- states the **main claim** of the paragraph\n- keeps its one example\n- adds nothing that is not there")
            page.update_preview()
        if name == "history" and page.rows:
            page.table.selectRow(0)
        snap(name)
    # Compare with the guidelines panel, the flag bar, a right-to-left item and a folded red-team item.
    page = w.show_page("compare")
    page.queue.config.retest_share = 0
    w.dock.show()
    page.act_flag("F")
    page.act_target_left("L")
    snap("compare-guidelines-flag")
    page.act_cancel("Esc")
    w.dock.hide()
    page.act_plain_left("Alt+L")  # the left response of the code item as plain text, Markdown source and all
    snap("compare-plain")
    page.act_left_clear("A")  # → the Arabic item
    snap("compare-rtl")
    page.act_left_clear("A")  # → the Chinese item
    snap("compare-cjk")
    page.act_left_clear("A")  # → the haiku
    page.act_left_clear("A")  # → the multi-turn conversation, open at its last turn
    snap("compare-multiturn")
    page.act_left_clear("A")  # → the red-team item, folded
    snap("compare-folded")
    w.show_help()
    app.processEvents()
    w.help_dialog.grab().save(str(args.out / "help.png"))
    w.help_dialog.close()
    # Compare on the demo project (the README's first picture), built afresh from resources/demo.
    from workbench.demo import ensure_demo_project

    w.open_project(ensure_demo_project(tmp / "demo.wbp"))
    page = w.show_page("compare")
    page.queue.config.retest_share = 0
    page.show_item(page.current)
    snap("compare-demo")
    w.close()
    del w
    return 0


if __name__ == "__main__":
    sys.exit(main())
