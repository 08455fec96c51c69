"""Screenshot of the Evaluation page with both win rates for ``docs/``: ``python -m tools.evaluation_screenshot
[--out docs]``.

Runs offscreen with real worker processes on the tiny test model (built in a subprocess, so this process never
imports torch): a reward-model run trained on the project's judged pairs, a blind round between a curt "parent" and
a helpful "tuned" model whose pairs the expert has partly judged, then "Score with reward model" on the page, so
the expert's win rate and the reward model's stand side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PAIRS = [
    ("Explain photosynthesis briefly.", "Plants turn light, water and carbon dioxide into sugar and oxygen.", "no"),
    ("How do I boil an egg?", "Put it in boiling water for eight minutes, then cool it in cold water.", "dunno"),
    ("What is a prime number?", "A whole number above one whose only divisors are one and itself.", "a number"),
    ("Why do we have seasons?", "The Earth's axis is tilted, so each hemisphere gets more sun part of the year.", "??"),
    ("What does a CPU do?", "It runs a program's instructions: arithmetic, logic and moving data.", "computer"),
    ("How do vaccines work?", "They train the immune system to recognise a germ before a real infection.", "shots"),
    ("What is inflation?", "A general rise in prices, so money buys less over time.", "money"),
    ("Why is the sea salty?", "Rivers carry dissolved minerals into it and evaporation leaves the salt behind.", "salt"),
]
ROUND = [
    ("Who wrote Hamlet?", "Shakespeare.", "Hamlet was written by William Shakespeare around 1600."),
    ("What is 7 times 8?", "56", "7 times 8 is 56."),
    ("What is the boiling point of water at sea level?", "100", "Water boils at 100 °C (212 °F) at sea level."),
    ("Name the largest planet.", "Jupiter", "Jupiter is the largest planet in the solar system."),
    ("How many continents are there?", "7", "There are seven continents, from Africa to Antarctica."),
    ("What gas do plants breathe in?", "CO2", "Plants take in carbon dioxide and give off oxygen."),
]


def build_project(path: Path, base: str) -> tuple[Path, int]:
    from workbench.evaluation import ModelRef, new_round, pair_round
    from workbench.store import Project

    with Project.create(path) as p:
        for q, good, bad in PAIRS:
            pid, _ = p.add_prompt([{"role": "user", "content": q}], source="demo")
            a, _ = p.add_response(pid, good)
            b, _ = p.add_response(pid, bad)
            p.add_comparison(pid, a, b, verdict="a", strength="clear", left_side="a")
        pids = [p.add_prompt([{"role": "user", "content": q}], source="heldout", split="heldout")[0] for q, _, _ in ROUND]
        tuned = "runs/tuned-dpo/adapter"
        rnd = new_round(p, ModelRef(base, None, "parent"), ModelRef(base, tuned, "tuned (DPO)"), pids)
        for pid, (_, short, full) in zip(pids, ROUND):
            p.add_response(pid, short, origin="model", model=base)
            p.add_response(pid, full, origin="model", model=base, adapter=tuned)
        pair_round(p, rnd)
        # The expert has judged four of the six pairs so far: three for the tuned model, one tie.
        for k, c in enumerate(p.comparisons(source=rnd.source)[:4]):
            tuned_is_a = p.get_response(c.response_a).adapter == tuned
            p.judge(c.id, "tie" if k == 3 else ("a" if tuned_is_a else "b"), strength=None if k == 3 else "clear")
    return path, rnd.id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from workbench.configs import RewardConfig
    from workbench.jobs import JobClient
    from workbench.store import Project

    from ui.pages.evaluation import EvaluationPage
    from ui.prefs import Prefs
    from ui.session import Session

    app = QApplication.instance() or QApplication(sys.argv[:1])
    tmp = Path(tempfile.mkdtemp(prefix="eval-shot-"))
    code = "import sys; from pathlib import Path; from tests.tiny_models import build_tiny_causal_lm as b; b(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(tmp / "tiny")], check=True, capture_output=True,
                   cwd=Path(__file__).resolve().parent.parent)
    path, round_id = build_project(tmp / "eval.wbp", str(tmp / "tiny"))
    # A reward model trained on the judged pairs, through the worker as the Train page starts it.
    cfg = RewardConfig(base_model=str(tmp / "tiny"), name="helpfulness", max_steps=40, batch_size=4, lr=5e-3, lora_r=4,
                       lora_alpha=8, eval_fraction=0.0, checkpoint_every=0, device="cpu", num_threads=1,
                       gradient_checkpointing=False, max_length=128)
    handle = JobClient(path).start("rm", cfg)
    for _ in handle.events():
        pass
    if handle.status != "done":
        print(f"reward model run failed: {handle.error}", file=sys.stderr)
        return 1

    project = Project.open(path)
    session = Session(project, Prefs(tmp / "prefs.ini"))
    page = EvaluationPage(session)
    page.resize(1400, 880)
    page.show()
    page.activate()
    page.model_a.set_model(str(tmp / "tiny"))
    page.model_b.set_model(str(tmp / "tiny"), "runs/tuned-dpo/adapter")
    page.round_box.setCurrentIndex(page.round_box.findData(round_id))
    page.start_scoring()

    loop = QEventLoop()
    t = QTimer()
    t.timeout.connect(lambda: loop.quit() if page.last_outcome is not None else None)
    t.start(100)
    QTimer.singleShot(600_000, loop.quit)
    loop.exec()
    t.stop()
    for _ in range(5):
        app.processEvents()
    args.out.mkdir(parents=True, exist_ok=True)
    page.grab().save(str(args.out / "evaluation.png"))
    print(args.out / "evaluation.png", page.last_outcome.status if page.last_outcome else "timed out")
    from ui.engine_client import run_manager

    run_manager(session).shutdown()
    page.close()
    page.deleteLater()
    app.processEvents()
    project.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
