"""Screenshots of the training desk for ``docs/``: ``python -m tools.training_screenshots [--out docs] [--model M]``
(``--only playground``: the Playground chatting with the bundled SmolLM2, which the full run leaves out;
``--only ppo-settings``: the Train page's PPO settings with several responses per prompt and the rloo estimator).

Runs offscreen with real worker processes: an SFT run watched live on the Train page, a second run with other
settings cancelled half way, a third killed (the failure banner), then the Runs page with both curves overlaid and
their config difference, and the Generate, Playground and Evaluation pages. ``--model`` defaults to the tiny test
model (built in a subprocess, so this process never imports torch); pass ``bundled`` for SmolLM2.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
    ("Name a prime number above ten.", "Eleven is a prime number above ten."),
    ("What do bees make?", "Bees make honey and wax."),
    ("How do you say hello in Spanish?", "You say hola."),
    ("What is two plus two?", "Two plus two is four."),
    ("Which planet is called the red planet?", "Mars is called the red planet."),
    ("What is water made of?", "Water is made of hydrogen and oxygen."),
    ("How many days are in a week?", "A week has seven days."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What animal says moo?", "A cow says moo."),
]


def build_project(path: Path) -> Path:
    from workbench.store import Project

    with Project.create(path) as p:
        for q, a in QA:
            pid, _ = p.add_prompt([{"role": "user", "content": q}], source="demo", tags=["facts"])
            p.add_demonstration(pid, a)
        for i in range(8):
            pid, _ = p.add_prompt([{"role": "user", "content": f"Explain idea number {i} briefly."}], source="demo")
            a, _ = p.add_response(pid, f"Idea {i} is explained clearly and briefly here.")
            b, _ = p.add_response(pid, f"idea {i}?? no")
            p.add_comparison(pid, a, b, verdict="a", strength="clear", left_side="a")
        for q in ("What is the boiling point of water at sea level?", "Who wrote Hamlet?", "What is 7 times 8?",
                  "How do I kill a Python process?"):
            p.add_prompt([{"role": "user", "content": q}], source="heldout", split="heldout", tags=["eval"])
    return path


def tiny_model(folder: Path) -> str:
    code = "import sys; from pathlib import Path; from tests.tiny_models import build_tiny_causal_lm as b; b(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True,
                   cwd=Path(__file__).resolve().parent.parent)
    return str(folder)


def ppo_settings_shot(session, snap) -> None:
    """The PPO settings scrolled to the rollout and KL fields (no run is started)."""
    from PySide6.QtWidgets import QScrollArea

    from ui.pages.train import TrainPage

    page = TrainPage(session)
    page.resize(1400, 880)
    page.show()
    page.activate()
    page.set_stage("ppo")
    page.form.set_values(dict(rollout_batch_size=8, samples_per_prompt=4, advantage_estimator="rloo", kl_coef=0.1,
                              target_kl=4.0, min_kl_coef=0.05))
    snap(page, "train-ppo-settings-layout")  # lays the form out before scrolling
    page.findChild(QScrollArea).ensureWidgetVisible(page.form.editors["whiten_advantages"], 50, 300)
    snap(page, "train-ppo-settings")


def playground_shot(session, out: Path, wait, snap) -> None:
    """The Playground answering with the bundled SmolLM2 (a real chat model, so the text reads as text)."""
    from workbench.paths import BUNDLED_MODEL_REF

    from ui.pages.playground import PlaygroundPage

    page = PlaygroundPage(session)
    page.resize(1400, 880)
    page.show()
    page.activate()
    page.model.set_model(BUNDLED_MODEL_REF)
    page.max_new.setValue(60)
    page.temperature.setValue(0.0)
    page.load()
    wait(lambda: page.ready or page.last_outcome is not None, 600)
    page.input.setPlainText("In one sentence: why is the sky blue?")
    page.send()
    wait(lambda: len(page.base_pane.history) >= 2 or page.last_outcome is not None, 600)
    snap(page, "playground")
    page.unload()
    wait(lambda: page.last_outcome is not None, 60)
    page.close()
    page.deleteLater()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--only", choices=("playground", "ppo-settings"), help="take only this page's screenshot")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from workbench.paths import BUNDLED_MODEL_REF
    from workbench.store import Project

    from ui.pages.evaluation import EvaluationPage
    from ui.pages.generate import GeneratePage
    from ui.prefs import Prefs
    from ui.pages.runs import RunsPage
    from ui.session import Session
    from ui.pages.train import TrainPage

    app = QApplication.instance() or QApplication(sys.argv[:1])
    tmp = Path(tempfile.mkdtemp(prefix="desk-shots-"))
    if args.only:
        model = BUNDLED_MODEL_REF
    else:
        model = tiny_model(tmp / "tiny") if args.model == "tiny" else BUNDLED_MODEL_REF if args.model == "bundled" else args.model
    project = Project.open(build_project(tmp / "desk.wbp"))
    session = Session(project, Prefs(tmp / "prefs.ini"))
    args.out.mkdir(parents=True, exist_ok=True)

    def wait(pred, timeout_s: float) -> None:
        loop = QEventLoop()
        t = QTimer()
        t.timeout.connect(lambda: loop.quit() if pred() else None)
        t.start(100)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        t.stop()

    def snap(widget, name: str) -> None:
        for _ in range(5):
            app.processEvents()
        widget.grab().save(str(args.out / f"{name}.png"))
        print(args.out / f"{name}.png")

    if args.only == "ppo-settings":
        ppo_settings_shot(session, snap)
        (args.out / "train-ppo-settings-layout.png").unlink()
        project.close()
        return 0
    if args.only == "playground":
        playground_shot(session, args.out, wait, snap)
        session._run_manager.shutdown()
        project.close()
        return 0

    train = TrainPage(session)
    train.resize(1400, 880)
    train.show()
    train.activate()
    train.preset.setCurrentText("Quick demo on CPU")
    train.set_base_model(model)
    tiny = args.model == "tiny"
    settings = dict(max_steps=400 if tiny else 40, checkpoint_every=100 if tiny else 10, eval_every=20 if tiny else 5,
                    batch_size=2, eval_fraction=0.2, name="first try")
    if tiny:
        settings.update(lora_r=4, lora_alpha=8, lr=1e-3, num_threads=1)
    train.form.set_values(settings)
    train.check()
    train.start()
    wait(lambda: train.charts.point_count() > (1200 if tiny else 100), 600)
    train.charts.flush()
    snap(train, "train")
    wait(lambda: train.last_outcome is not None, 900)
    train.charts.flush()
    snap(train, "train-done")
    first = train.run_id

    train.form.set_values(dict(lr=3e-4 if tiny else 1e-4, lora_r=8, lora_alpha=16, name="lower lr"))
    train.check()
    train.last_outcome = None
    train.start()
    wait(lambda: train.charts.point_count() > (600 if tiny else 60), 600)
    train.cancel()
    wait(lambda: train.last_outcome is not None, 300)
    second = train.run_id

    train.form.set_values(dict(max_steps=100_000, name="killed"))
    train.last_outcome = None
    train.start()
    wait(lambda: train.charts.point_count() > 20, 600)
    os.killpg(train.manager.current.handle.pid, signal.SIGKILL)
    wait(lambda: train.last_outcome is not None, 120)
    snap(train, "train-failed")

    runs = RunsPage(session)
    runs.resize(1400, 880)
    runs.show()
    runs.activate()
    runs.select_runs([first, second])
    runs.charts.flush()
    snap(runs, "runs")
    runs.tabs.setCurrentIndex(1)
    snap(runs, "runs-diff")

    for cls, name in ((GeneratePage, "generate"), (EvaluationPage, "evaluation")):
        page = cls(session)
        page.resize(1400, 880)
        page.show()
        page.activate()
        snap(page, name)
        page.close()
        page.deleteLater()
    session._run_manager.shutdown()
    for w in (train, runs):
        w.close()
        w.deleteLater()
    app.processEvents()
    project.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
