"""Builds a synthetic project of N comparisons for benchmarks, fast (the store's bulk inserts in one transaction).

Layout: N/4 prompts with 4 responses each and 4 comparisons per prompt; the first ``judged`` comparisons carry
a verdict (drawn from ``verdicts``), the rest are pending (the queue). The file is cached under bench/out/ and
reused when it exists at the current schema version (rebuilt when an older app made it).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from workbench.messages import canonical_json, prompt_hash, response_hash
from workbench.store import Project, now_iso

OUT = Path(__file__).resolve().parent / "out"
WORDS = ("alpha beta gamma delta model answer reward policy value token prompt judge expert safety data loop "
         "train rank flag write review careful clear strong slight tie better worse").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


ALL_VERDICTS = ("a", "b", "a", "b", "tie", "both_bad")


def build(path: Path, comparisons: int = 1_000_000, judged: int = 100_000, seed: int = 0,
          verdicts: tuple[str, ...] = ALL_VERDICTS) -> Path:
    if path.exists():
        from workbench.errors import WorkbenchError

        try:
            with Project.open(path, read_only=True):
                return path
        except WorkbenchError:  # an older schema: built again rather than migrated (a backup copy each time)
            pass
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    project = Project.create(tmp)
    stamp = now_iso()
    n_prompts = comparisons // 4
    strengths = ("slight", "clear", "strong")
    with project.transaction():
        prompts, responses, comps = [], [], []
        cid = 0
        for p in range(1, n_prompts + 1):
            msgs = [{"role": "user", "content": f"Question {p}: {_text(rng, 12)}?"}]
            prompts.append((p, canonical_json(msgs), msgs[0]["content"], "synthetic", "train", prompt_hash(msgs), stamp))
            base = (p - 1) * 4
            for k in range(4):
                content = f"Answer {k} to {p}: {_text(rng, 40)}"
                responses.append((base + k + 1, p, content, "imported", "synthetic", None, response_hash(content), stamp))
            for a, b in ((0, 1), (2, 3), (0, 2), (1, 3)):
                cid += 1
                if cid <= judged:
                    v = rng.choice(verdicts)
                    s = rng.choice(strengths) if v in ("a", "b") else None
                    comps.append((cid, p, base + a + 1, base + b + 1, rng.choice("ab"), v, s, 1, stamp, "synthetic", stamp))
                else:
                    comps.append((cid, p, base + a + 1, base + b + 1, None, None, None, None, None, "synthetic", stamp))
        project.insert_prompts(prompts)
        project.insert_responses(responses)
        project.insert_synthetic_comparisons(comps)
    project.checkpoint_wal("TRUNCATE")
    project.close()
    tmp.rename(path)
    print(f"built {path} ({comparisons:,} comparisons, {judged:,} judged) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(build(OUT / f"synthetic-{n}.wbp", n))
