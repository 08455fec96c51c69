"""Where the benchmarks find the real public data sets: ``../shared/data/real`` beside the checkout.

Benchmarks only. The product reads nothing outside the repository and the user's data, and the tests read the
few real records they need from ``tests/data``. ``RLHF_WORKBENCH_REAL_DATA`` points at the folder when it lies
elsewhere (a checkout that is not beside ``shared/``).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REAL_DATA_ENV = "RLHF_WORKBENCH_REAL_DATA"


def real_data_dir() -> Path:
    """The real data folder; exits with one line naming the folder (and the override) when it is absent."""
    override = os.environ.get(REAL_DATA_ENV)
    root = Path(override) if override else REPO.parent / "shared" / "data" / "real"
    if not root.is_dir():
        raise SystemExit(f"{root}: no such folder; this benchmark needs the real public data sets there "
                         f"(or set {REAL_DATA_ENV} to their folder)")
    return root
