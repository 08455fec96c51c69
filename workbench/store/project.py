"""The :class:`Project` facade: one open project file with every area's operations on it.

Each area of the store is its own module and class (prompts, responses, comparisons and the queue, rankings,
demonstrations, flags, snapshots, training rows, runs, counts, the History list, the exchange's and the bulk
import's rows, guidelines and meta, the file's health), all built on :class:`~workbench.store.connection.ProjectFile` (the
connection, transactions, migrations). ``Project`` puts them together, so a caller holds one object and writes
``project.add_prompt(...)``, ``project.next_pending(...)``, ``project.undo(...)`` whatever the area.
"""

from __future__ import annotations

from .bulk import BulkStore
from .comparisons import ComparisonStore
from .demonstrations import DemonstrationStore
from .exchange_rows import ExchangeStore
from .flags import FlagStore
from .guidelines import GuidelineStore
from .health import HealthStore
from .history import HistoryStore
from .prompts import PromptStore
from .rankings import RankingStore
from .responses import ResponseStore
from .runs import RunStore
from .snapshots import SnapshotStore
from .stats import StatsStore
from .training_rows import TrainingRowStore


class Project(
    HealthStore,
    PromptStore,
    ResponseStore,
    ComparisonStore,
    RankingStore,
    DemonstrationStore,
    FlagStore,
    SnapshotStore,
    TrainingRowStore,
    RunStore,
    StatsStore,
    HistoryStore,
    GuidelineStore,
    ExchangeStore,
    BulkStore,
):
    """An open project file. Create with :meth:`create` or :meth:`open`; close with :meth:`close`."""
