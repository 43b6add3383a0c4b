"""The append-only results store and the leaderboard generated from it."""

from rsssl.results.store import (
    AGGREGATE_SEED,
    BASELINES,
    COLUMNS,
    DEFAULT_RESULTS_PATH,
    ONLINE_PROTOCOLS,
    PROTOCOLS,
    ResultRow,
    append_rows,
    existing_keys,
    filter_new,
    parse_budget,
    read_rows,
    read_table,
    row_key,
)

__all__ = [
    "AGGREGATE_SEED",
    "BASELINES",
    "COLUMNS",
    "DEFAULT_RESULTS_PATH",
    "ONLINE_PROTOCOLS",
    "PROTOCOLS",
    "ResultRow",
    "append_rows",
    "existing_keys",
    "filter_new",
    "parse_budget",
    "read_rows",
    "read_table",
    "row_key",
]
