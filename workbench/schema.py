"""The project file's schema and its migrations, keyed on ``PRAGMA user_version``.

Each entry of MIGRATIONS takes the schema from version ``i`` to ``i + 1``. A file written by a newer app is
refused; an older one is backed up (a full copy beside it) before it is migrated.
"""

from __future__ import annotations

APP_ID = "rlhf-workbench"
# SQLite's application_id header field: marks the file as ours even before any table is read ("RLHF").
APPLICATION_ID = 0x524C4846

SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE prompt (
    id INTEGER PRIMARY KEY,
    messages TEXT NOT NULL,                  -- JSON list of {role, content}
    title TEXT NOT NULL,                     -- last user turn, for lists and search
    source TEXT NOT NULL DEFAULT '',
    split TEXT NOT NULL DEFAULT 'train' CHECK (split IN ('train', 'heldout')),
    content_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE prompt_tag (
    prompt_id INTEGER NOT NULL REFERENCES prompt(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (tag, prompt_id)
) WITHOUT ROWID;
CREATE INDEX prompt_tag_prompt ON prompt_tag(prompt_id);
CREATE INDEX prompt_source ON prompt(source);

CREATE TABLE response (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompt(id) ON DELETE CASCADE,
    content TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('imported', 'expert', 'model')),
    source TEXT NOT NULL DEFAULT '',
    model TEXT,                              -- model id (origin = model)
    adapter TEXT,                            -- adapter path or run id (origin = model)
    sampling TEXT,                           -- JSON sampling parameters (origin = model)
    seed INTEGER,
    content_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (prompt_id, content_hash)
);

CREATE TABLE guideline (
    version INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE comparison (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompt(id) ON DELETE CASCADE,
    response_a INTEGER NOT NULL REFERENCES response(id) ON DELETE CASCADE,
    response_b INTEGER NOT NULL REFERENCES response(id) ON DELETE CASCADE,
    left_side TEXT CHECK (left_side IN ('a', 'b')),      -- which response was shown on the left
    verdict TEXT CHECK (verdict IN ('a', 'b', 'tie', 'both_bad')),   -- NULL: pending (the queue)
    strength TEXT CHECK (strength IN ('slight', 'clear', 'strong')),
    criteria TEXT,                           -- JSON {criterion: 'a' | 'b' | 'tie'}
    note TEXT,
    time_spent_ms INTEGER,
    guideline_version INTEGER,
    judged_at TEXT,
    source TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT 'train' CHECK (kind IN ('train', 'eval')),  -- eval items never enter training
    retest_of INTEGER REFERENCES comparison(id) ON DELETE SET NULL,
    retracted_at TEXT,
    created_at TEXT NOT NULL,
    CHECK (response_a != response_b),
    CHECK (strength IS NULL OR verdict IN ('a', 'b'))
);
CREATE INDEX comparison_pending ON comparison(id) WHERE verdict IS NULL AND retracted_at IS NULL;
CREATE INDEX comparison_pair ON comparison(response_a, response_b);
CREATE INDEX comparison_prompt ON comparison(prompt_id);
CREATE INDEX comparison_judged ON comparison(judged_at) WHERE verdict IS NOT NULL;
CREATE INDEX comparison_expert_judged ON comparison(judged_at) WHERE verdict IS NOT NULL AND guideline_version IS NOT NULL;
CREATE INDEX comparison_retest ON comparison(retest_of) WHERE retest_of IS NOT NULL;

CREATE TABLE ranking (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompt(id) ON DELETE CASCADE,
    note TEXT,
    time_spent_ms INTEGER,
    guideline_version INTEGER,
    source TEXT NOT NULL DEFAULT '',
    retest_of INTEGER REFERENCES ranking(id) ON DELETE SET NULL,
    judged_at TEXT,
    retracted_at TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE ranking_entry (
    ranking_id INTEGER NOT NULL REFERENCES ranking(id) ON DELETE CASCADE,
    response_id INTEGER NOT NULL REFERENCES response(id) ON DELETE CASCADE,
    rank INTEGER NOT NULL CHECK (rank >= 1),   -- 1 is best; equal ranks are ties
    PRIMARY KEY (ranking_id, response_id)
) WITHOUT ROWID;

CREATE TABLE demonstration (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompt(id) ON DELETE CASCADE,
    response_id INTEGER NOT NULL REFERENCES response(id) ON DELETE CASCADE,
    edited_from INTEGER REFERENCES response(id) ON DELETE SET NULL,
    note TEXT,
    time_spent_ms INTEGER,
    guideline_version INTEGER,
    source TEXT NOT NULL DEFAULT '',
    retracted_at TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (response_id)
);

CREATE TABLE flag_category (
    key TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    builtin INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE safety_flag (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompt(id) ON DELETE CASCADE,
    response_id INTEGER REFERENCES response(id) ON DELETE CASCADE,  -- NULL: the flag is on the prompt text
    category TEXT NOT NULL REFERENCES flag_category(key),
    present INTEGER NOT NULL DEFAULT 1 CHECK (present IN (0, 1)),   -- 0: checked and known absent
    severity TEXT CHECK (severity IN ('low', 'medium', 'high')),
    note TEXT,
    source TEXT NOT NULL DEFAULT '',
    guideline_version INTEGER,
    retracted_at TEXT,
    created_at TEXT NOT NULL,
    CHECK (present = 0 OR severity IS NOT NULL)
);
CREATE INDEX safety_flag_response ON safety_flag(response_id);
CREATE INDEX safety_flag_prompt ON safety_flag(prompt_id);

CREATE TABLE snapshot (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                      -- preference | sft | kto | safety | project | prompts
    content_hash TEXT NOT NULL,
    counts TEXT NOT NULL,                    -- JSON
    options TEXT NOT NULL DEFAULT '{}',      -- JSON: the filters and settings that chose the rows
    note TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE snapshot_item (
    snapshot_id INTEGER NOT NULL REFERENCES snapshot(id) ON DELETE CASCADE,
    item_type TEXT NOT NULL,                 -- comparison | ranking | demonstration | flag | prompt | response
    item_id INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, item_type, item_id)
) WITHOUT ROWID;
CREATE INDEX snapshot_item_lookup ON snapshot_item(item_type, item_id);

CREATE TABLE run (
    id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,                     -- sft | rm | safety | ppo | dpo | generate | eval
    name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    base_model TEXT,
    adapter_from TEXT,
    snapshot_id INTEGER REFERENCES snapshot(id),
    config TEXT NOT NULL DEFAULT '{}',       -- JSON of the run config dataclass
    output_dir TEXT,
    pid INTEGER,
    error TEXT,
    final_metrics TEXT,                      -- JSON
    parent_run INTEGER REFERENCES run(id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE TABLE metric (
    run_id INTEGER NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    key TEXT NOT NULL,
    value REAL,
    wall_time REAL NOT NULL
);
CREATE INDEX metric_run_key ON metric(run_id, key, step);
CREATE TABLE checkpoint (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    path TEXT NOT NULL,
    is_best INTEGER NOT NULL DEFAULT 0,
    metrics TEXT,
    created_at TEXT NOT NULL
);
"""

# Row counts kept by triggers, so `stats` answers in constant time on a million comparisons.
COUNTER_KEYS = (
    "prompts", "heldout_prompts", "responses", "comparisons", "retracted", "retests", "rankings", "demonstrations",
    "flags", "safety_labels",
    "verdict:a", "verdict:b", "verdict:tie", "verdict:both_bad", "verdict:pending",
    "strength:slight", "strength:clear", "strength:strong",
)


def _bump(key_sql: str, delta: str) -> str:
    return f"UPDATE counter SET n = n + ({delta}) WHERE key = {key_sql};"


def _comparison_terms(row: str, sign: str) -> str:
    # A retracted judgment stays in the table for old snapshots but no longer counts as a verdict.
    live = f"({row}.retracted_at IS NULL)"
    return "\n    ".join([
        _bump("'comparisons'", f"{sign}1"),
        _bump(f"'verdict:' || coalesce({row}.verdict, 'pending')", f"{sign}{live}"),
        _bump(f"'strength:' || {row}.strength", f"{sign}{live}"),
        _bump("'retracted'", f"{sign}({row}.retracted_at IS NOT NULL)"),
        _bump("'retests'", f"{sign}({row}.retest_of IS NOT NULL)"),
    ])


def _flag_terms(row: str, sign: str) -> str:
    live = f"({row}.present = 1 AND {row}.retracted_at IS NULL)"
    return "\n    ".join([
        f"INSERT OR IGNORE INTO counter VALUES ('flag:' || {row}.category, 0);",
        _bump("'safety_labels'", f"{sign}1"),
        _bump("'flags'", f"{sign}{live}"),
        _bump(f"'flag:' || {row}.category", f"{sign}{live}"),
    ])


def _counter_sql() -> str:
    parts = ["CREATE TABLE counter (key TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"]
    parts.append("INSERT INTO counter (key, n) VALUES " + ", ".join(f"('{k}', 0)" for k in COUNTER_KEYS) + ";")
    simple = {"prompt": "prompts", "response": "responses", "ranking": "rankings", "demonstration": "demonstrations"}
    for table, key in simple.items():
        parts.append(f"CREATE TRIGGER {table}_count_ins AFTER INSERT ON {table} BEGIN {_bump(repr(key), '1')} END;")
        parts.append(f"CREATE TRIGGER {table}_count_del AFTER DELETE ON {table} BEGIN {_bump(repr(key), '-1')} END;")
    parts.append(
        "CREATE TRIGGER prompt_heldout_ins AFTER INSERT ON prompt WHEN NEW.split = 'heldout' BEGIN "
        + _bump("'heldout_prompts'", "1") + " END;"
    )
    parts.append(
        "CREATE TRIGGER prompt_heldout_del AFTER DELETE ON prompt WHEN OLD.split = 'heldout' BEGIN "
        + _bump("'heldout_prompts'", "-1") + " END;"
    )
    parts.append(
        "CREATE TRIGGER prompt_heldout_upd AFTER UPDATE OF split ON prompt BEGIN "
        + _bump("'heldout_prompts'", "(NEW.split = 'heldout') - (OLD.split = 'heldout')") + " END;"
    )
    parts.append(f"CREATE TRIGGER comparison_count_ins AFTER INSERT ON comparison BEGIN\n    {_comparison_terms('NEW', '+')}\nEND;")
    parts.append(f"CREATE TRIGGER comparison_count_del AFTER DELETE ON comparison BEGIN\n    {_comparison_terms('OLD', '-')}\nEND;")
    parts.append(
        "CREATE TRIGGER comparison_count_upd AFTER UPDATE OF verdict, strength, retracted_at, retest_of ON comparison BEGIN\n    "
        + _comparison_terms("OLD", "-") + "\n    " + _comparison_terms("NEW", "+") + "\nEND;"
    )
    parts.append(f"CREATE TRIGGER flag_count_ins AFTER INSERT ON safety_flag BEGIN\n    {_flag_terms('NEW', '+')}\nEND;")
    parts.append(f"CREATE TRIGGER flag_count_del AFTER DELETE ON safety_flag BEGIN\n    {_flag_terms('OLD', '-')}\nEND;")
    parts.append(
        "CREATE TRIGGER flag_count_upd AFTER UPDATE OF present, retracted_at, category ON safety_flag BEGIN\n    "
        + _flag_terms("OLD", "-") + "\n    " + _flag_terms("NEW", "+") + "\nEND;"
    )
    return "\n".join(parts) + "\n"


def _live_count_sql(table: str, key: str) -> str:
    """Triggers that count a table's live rows only: a retracted row stays for the runs that used it but no longer
    counts, so the status bar, Overview and Train name the same number."""
    live_new, live_old = "(NEW.retracted_at IS NULL)", "(OLD.retracted_at IS NULL)"
    return "\n".join([
        f"DROP TRIGGER {table}_count_ins;",
        f"DROP TRIGGER {table}_count_del;",
        f"CREATE TRIGGER {table}_count_ins AFTER INSERT ON {table} BEGIN {_bump(repr(key), live_new)} END;",
        f"CREATE TRIGGER {table}_count_del AFTER DELETE ON {table} BEGIN {_bump(repr(key), '-' + live_old)} END;",
        f"CREATE TRIGGER {table}_count_upd AFTER UPDATE OF retracted_at ON {table} BEGIN "
        f"{_bump(repr(key), live_new + ' - ' + live_old)} END;",
        f"UPDATE counter SET n = (SELECT COUNT(*) FROM {table} WHERE retracted_at IS NULL) WHERE key = {key!r};",
    ])


# Version 2: live counts of rankings and demonstrations; the History list reads every kind newest first by index; a
# score run's per-comparison values (the reward-score gap of a pending pair) read in value order, so the queue can
# serve the closest pairs first by a seek on an index.
SCHEMA_V2 = "\n".join([
    _live_count_sql("ranking", "rankings"),
    _live_count_sql("demonstration", "demonstrations"),
    "CREATE INDEX ranking_judged ON ranking(judged_at);",
    "CREATE INDEX demonstration_created ON demonstration(created_at);",
    "CREATE INDEX safety_flag_created ON safety_flag(created_at);",
    "CREATE INDEX metric_run_key_value ON metric(run_id, key, value, step);",
]) + "\n"

# MIGRATIONS[i] upgrades a file at user_version i to i + 1. Version 0 is an empty, brand-new file.
MIGRATIONS: list[str] = [SCHEMA_V1 + _counter_sql(), SCHEMA_V2]
SCHEMA_VERSION = len(MIGRATIONS)
