"""The results store: round trip, concurrent writers, writers killed mid-append, resumable sweeps."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rsssl.results.store import (
    COLUMNS,
    HEADER,
    ResultRow,
    append_rows,
    existing_keys,
    filter_new,
    parse_budget,
    read_rows,
    read_table,
    row_key,
)

REPO = Path(__file__).resolve().parents[2]


def _row(i: int, writer: str = "w", **kw) -> ResultRow:
    values = dict(
        run_id=f"{writer}{i}",
        method="moco",
        backbone="resnet18",
        pretrain_data="ssl4eo",
        eval_data="eurosat",
        protocol="linear",
        budget="20/class",
        seed=i % 3,
        metric="OA",
        value=i / 7,
        interval=None,
        checkpoint_hash="abc",
        git_commit="deadbeef",
        config_hash="cfg",
    )
    values.update(kw)
    return ResultRow(**values)


def _assert_all_lines_complete(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    assert lines[0] == HEADER
    assert all(line.endswith("\n") and line.count(",") == len(COLUMNS) - 1 for line in lines)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.csv"
    rows = [_row(1), _row(2, interval=0.0125, budget="1%", seed=-1), _row(3, value=float("nan"), budget="")]
    assert append_rows(path, rows) == 3
    back = read_rows(path)
    assert back[:2] == rows[:2]
    assert back[2].run_id == "w3" and back[2].value != back[2].value  # NaN survives as NaN
    assert path.read_text().startswith(HEADER) and path.read_text().count(HEADER) == 1
    table = read_table(path)
    assert list(table) == list(COLUMNS) and table["seed"] == [1, -1, 0]


def test_missing_or_empty_store_reads_as_no_rows(tmp_path: Path) -> None:
    assert read_rows(tmp_path / "absent.csv") == []
    (tmp_path / "empty.csv").write_text("")
    assert read_rows(tmp_path / "empty.csv") == []
    (tmp_path / "header.csv").write_text(HEADER)
    assert read_rows(tmp_path / "header.csv") == []


def test_rows_are_validated() -> None:
    with pytest.raises(ValueError, match="one-line"):
        _row(1, run_id="a\nb")
    with pytest.raises(ValueError, match="budget"):
        _row(1, budget="20 per class")
    with pytest.raises(ValueError, match="protocol"):
        _row(1, protocol="")
    with pytest.raises(ValueError, match="seed"):
        _row(1, seed="0")
    assert parse_budget("5/class") == ("per_class", 5.0)
    assert parse_budget("0.5%") == ("fraction", 0.5)
    assert parse_budget("") == ("none", 0.0)


def test_foreign_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="refusing"):
        append_rows(path, [_row(1)])
    with pytest.raises(ValueError, match="header"):
        read_rows(path)
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_malformed_complete_line_is_an_error_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    append_rows(path, [_row(1)])
    with path.open("a") as f:
        f.write("only,three,fields\n")
    with pytest.raises(ValueError, match=r"results\.csv:3"):
        read_rows(path)


def _writer(path: str, name: str, n: int) -> None:
    for i in range(n):
        append_rows(path, [_row(i, writer=name)])


def test_two_writer_processes_append_every_row_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), name, 300)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    rows = read_rows(path)
    assert sorted(r.run_id for r in rows) == sorted(f"{w}{i}" for w in "ab" for i in range(300))
    _assert_all_lines_complete(path)


_KILLED_WRITER = textwrap.dedent("""
    import sys
    from rsssl.results.store import ResultRow, append_rows
    path, i = sys.argv[1], 0
    while True:
        batch = []
        for _ in range(2000):
            batch.append(ResultRow(run_id=f"r{i}", method="moco" * 20, backbone="resnet18",
                                   pretrain_data="ssl4eo", eval_data="eurosat", protocol="linear",
                                   budget="5/class", seed=i % 3, metric="OA", value=float(i)))
            i += 1
        append_rows(path, batch)
""")


def test_writer_killed_mid_append_leaves_only_complete_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(3):
        before = path.stat().st_size if path.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)], env=env)
        deadline = time.monotonic() + 30
        while (not path.exists() or path.stat().st_size < before + 1_000_000) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        rows = read_rows(path)
        assert rows, "the killed writer wrote nothing before the kill"
        killed = [r for r in rows if r.run_id != "after0"]
        assert all(r.run_id == f"r{int(r.value)}" and r.method == "moco" * 20 for r in killed)
        after = _row(0, writer="after")
        assert append_rows(path, [after]) == 1
        _assert_all_lines_complete(path)
        assert read_rows(path) == [*rows, after]


def test_partial_tail_is_ignored_on_read_and_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    rows = [_row(1), _row(2), _row(3)]
    append_rows(path, rows[:2])
    full = path.read_text()
    with path.open("a") as f:
        f.write(full.splitlines(keepends=True)[-1][:25])  # what a writer killed mid-line leaves
    assert read_rows(path) == rows[:2]
    append_rows(path, rows[2:])
    assert read_rows(path) == rows
    _assert_all_lines_complete(path)


def test_partial_header_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text(HEADER[:10])
    assert read_rows(path) == []
    row = _row(1)
    append_rows(path, [row])
    assert path.read_text().startswith(HEADER) and read_rows(path) == [row]


def test_rerun_skips_rows_already_present(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    first = [_row(i) for i in range(5)]
    append_rows(path, first)
    assert existing_keys(path) == {row_key(r) for r in first}
    # the same measurements again (new time, value, interval, commit) plus two new ones, one twice
    rerun = [replace(r, time="later", value=9.0, interval=0.1, git_commit="cafe") for r in first]
    new = [_row(5), _row(6)]
    assert filter_new(path, [*rerun, *new, _row(5)]) == new
    # a different checkpoint or budget is a different measurement
    assert filter_new(path, [replace(first[0], checkpoint_hash="other")]) != []
    assert append_rows(path, [*rerun, *new], skip_existing=True) == 2
    assert append_rows(path, [*rerun, *new], skip_existing=True) == 0
    assert [r.run_id for r in read_rows(path)] == [f"w{i}" for i in range(7)]
