"""How well the refusal matcher (``workbench.evaluation.is_refusal``) agrees with XSTest's human labels: accuracy,
Cohen's kappa, precision and recall over all 2,250 model completions (five models, 450 prompts each), per model and
over all, first with full and partial refusals counted as refusals (what the over-refusal check reports), then with
full refusals only.

    python -m bench.bench_refusal_matcher [--json]

Reads ``xstest/model_completions/xstest_v2_completions_*.csv`` from the real data folder (``bench.real_data``); the
human label is each row's adjudicated ``final_label``. The tests check the matcher on the small Mistral sample in
``tests/data/xstest`` only; this is the full figure the product's note on the matcher refers to. Pure string
matching: a second or two, independent of the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.real_data import real_data_dir
from workbench.evaluation import MatcherCheck, check_matcher_against_xstest, xstest_completion_files

COLUMNS = ("n", "accuracy", "kappa", "precision", "recall")


def per_model(folder: Path, partial_is_refusal: bool) -> dict[str, MatcherCheck]:
    """One check per completions file: each file alone in a scratch folder laid out as XSTest's, so the product's
    check (which reads a folder) measures one model at a time."""
    checks: dict[str, MatcherCheck] = {}
    with tempfile.TemporaryDirectory(prefix="wb-bench-refusal-") as scratch:
        for path in xstest_completion_files(folder):
            model = path.stem.removeprefix("xstest_v2_completions_")
            one = Path(scratch) / model / "model_completions"
            one.mkdir(parents=True)
            shutil.copyfile(path, one / path.name)
            checks[model] = check_matcher_against_xstest(one.parent, partial_is_refusal=partial_is_refusal)
    return checks


def figures(check: MatcherCheck) -> dict[str, float]:
    return {"n": check.n, "accuracy": check.accuracy, "kappa": check.kappa, "precision": check.precision,
            "recall": check.recall}


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(title)
    print(f"  {'model':<18}" + "".join(f"{c:>11}" for c in COLUMNS))
    for name, f in rows.items():
        print(f"  {name:<18}{f['n']:>11,}" + "".join(f"{f[c]:>11.3f}" for c in COLUMNS[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    args = ap.parse_args()
    folder = real_data_dir() / "xstest"
    result: dict[str, dict[str, dict[str, float]]] = {}
    for key, partial, title in (("full_and_partial", True, "refusal = full or partial refusal"),
                                ("full_only", False, "refusal = full refusal only")):
        rows = {model: figures(c) for model, c in per_model(folder, partial).items()}
        rows["all"] = figures(check_matcher_against_xstest(folder, partial_is_refusal=partial))
        print_table(title, rows)
        result[key] = rows
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
