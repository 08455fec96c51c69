"""Screenshots of the loop in the window for ``docs/``: ``python -m tools.loop_screenshots [--out docs]``.

Runs offscreen on a copy of the demo project with real worker processes on the tiny test model (built in a
subprocess, so this process never imports torch): 24 pairs judged, a reward model, a safety classifier and a PPO run
trained through ``workbench train``, a blind round judged. Then: the Overview (``overview.png``), the Train page's
PPO pickers with the reward-model list open (``train-pickers.png``), the Evaluation page with its harmful-output
rates measured in the page (``evaluation-loop.png``), the Runs page with Export… done (``runs-export.png``) and
Project → Import… after an import (``import.png``).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--device", "cpu", "--quantize", "none", "--threads", "1", "--quiet"]


def workbench(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "workbench.cli", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def prepare(folder: Path) -> tuple[Path, str]:
    """The demo project with judgments, flags, three finished runs and a judged blind round; the tiny model."""
    from tools.training_screenshots import tiny_model
    from workbench.demo import ensure_demo_project
    from workbench.evaluation import rounds
    from workbench.store import Project

    model = tiny_model(folder / "tiny-llama")
    path = ensure_demo_project(folder / "demo.wbp")
    rng = random.Random(7)
    with Project.open(path) as p:
        for c in p.comparisons()[:24]:
            verdict = rng.choice(["a", "a", "b", "tie"])
            p.judge(c.id, verdict, strength=rng.choice(["slight", "clear", "strong"]) if verdict in "ab" else None,
                    left_side=rng.choice("ab"), time_spent_ms=rng.randint(4000, 20000))
        for i, r in enumerate(p.responses()[:12]):
            p.add_flag(r.prompt_id, "violence", "medium", response_id=r.id, present=i % 3 == 0)
    base = ["--base", model, *TINY]
    workbench("train", "rm", str(path), *base, "--max-steps", "6", "--batch-size", "2", "--name", "first judgments")
    workbench("train", "safety", str(path), *base, "--max-steps", "4", "--batch-size", "2")
    workbench("train", "ppo", str(path), *base, "--max-steps", "1", "--batch-size", "2", "--lr", "0.05",
              "--name", "one step")
    workbench("eval", "round", str(path), "--limit", "6", "--max-new-tokens", "24", "--device", "cpu", "--quiet")
    with Project.open(path) as p:
        rnd = rounds(p)[-1]
        for c in p.comparisons(source=rnd.source):
            tuned_is_a = bool(p.get_response(c.response_a).adapter)
            p.judge(c.id, "a" if tuned_is_a == (rng.random() < 0.7) else "b", strength="clear", left_side="a")
    return path, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QPainter
    from PySide6.QtWidgets import QApplication

    from ui.engine_client import run_manager
    from ui.main_window import MainWindow
    from ui.prefs import Prefs

    # A fixed, readable scratch folder: its paths show in the pictures.
    tmp = Path(tempfile.gettempdir()) / "rlhf-workbench-screens"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    path, model = prepare(tmp)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    prefs = Prefs(tmp / "prefs.ini")
    prefs.set("safety/hide_flagged", False)
    w = MainWindow(prefs)
    w.resize(1400, 900)
    w.show()
    w.open_project(path)
    w.dock.hide()
    args.out.mkdir(parents=True, exist_ok=True)

    def settle() -> None:
        for _ in range(5):
            app.processEvents()
            time.sleep(0.02)

    def wait(pred, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while not pred() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.05)

    def snap(name: str, *over) -> None:
        """The window, with ``over`` (a dialog or an open drop-down) painted where it stands on screen."""
        settle()
        shot = w.grab()
        painter = QPainter(shot)
        for widget in over:
            top_left = w.mapFromGlobal(widget.mapToGlobal(widget.rect().topLeft()))
            painter.drawPixmap(top_left, widget.grab())
        painter.end()
        shot.save(str(args.out / f"{name}.png"))
        print(args.out / f"{name}.png")

    w.show_page("overview")
    snap("overview")

    train = w.show_page("train")
    train.set_stage("ppo")
    train.set_base_model(model)
    picker = train.pickers["reward_model"]
    picker.select_newest()
    train.check()
    picker.combo.showPopup()
    snap("train-pickers", picker.combo.view().window())
    picker.combo.hidePopup()

    evaluation = w.show_page("evaluation")
    evaluation.limit.setValue(6)
    evaluation.sampling.setCurrentIndex(2)
    evaluation.round_box.setCurrentIndex(0)
    evaluation.start_harm()
    wait(lambda: evaluation.job is None, 600)
    snap("evaluation-loop")

    runs = w.show_page("runs")
    ppo = [r for r in w.session.project.runs() if r["stage"] == "ppo"][-1]
    runs.select_runs([ppo["id"]])
    dialog = runs.export_selected()
    dialog.format.setCurrentIndex(dialog.format.findData("hf"))
    dialog.move(w.mapToGlobal(w.rect().center()) - dialog.rect().center())
    dialog.start()
    wait(lambda: dialog.result is not None, 600)
    snap("runs-export", dialog)
    dialog.close()

    w.show_import()
    importer = w.import_dialog
    data = tmp / "hh-rlhf-helpful-base-test.jsonl.gz"
    shutil.copy(ROOT / "tests" / "data" / "anthropic-hh-rlhf" / "helpful-base" / "test.jsonl.gz", data)
    importer.file.setText(str(data))
    importer.start()
    wait(lambda: importer.thread is None, 300)
    importer.move(w.mapToGlobal(w.rect().center()) - importer.rect().center())
    snap("import", importer)
    importer.close()

    run_manager(w.session).shutdown()
    w.close()
    del w
    return 0


if __name__ == "__main__":
    sys.exit(main())
