"""The results store: round trip, concurrent writers, writers killed mid-append, resumable sweeps."""

from __future__ import annotations

import errno
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
    configs_path,
    existing_keys,
    filter_new,
    make_run_ids_relative,
    parse_budget,
    read_configs,
    read_rows,
    read_table,
    record_config,
    relative_run_id,
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


def _rerun_writer(path: str, n: int) -> None:
    for i in range(n):
        append_rows(path, [_row(i)], skip_existing=True)


def test_two_reruns_of_one_sweep_at_once_write_each_row_once(tmp_path: Path) -> None:
    """Two sweeps finishing the same units on one store: the check for a row and its append
    happen under one lock, so neither duplicates what the other wrote."""
    path = tmp_path / "results.csv"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rerun_writer, args=(str(path), 200)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(r.run_id for r in read_rows(path)) == sorted(f"w{i}" for i in range(200))
    _assert_all_lines_complete(path)


def _full_after(limit: int):
    """An `os.write` that stores at most `limit` more bytes, then fails as a full disk does."""
    real_write, left = os.write, [limit]

    def write(fd: int, data: bytes) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = real_write(fd, data[: left[0]])
        left[0] -= written
        return written

    return write


def test_a_full_disk_mid_append_writes_no_part_of_the_batch(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "results.csv"
    append_rows(path, [_row(0), _row(1)])
    before = path.read_bytes()
    batch = [_row(2), _row(3), _row(4)]
    one_and_a_half_rows = len(before.splitlines()[1]) * 3 // 2
    monkeypatch.setattr("rsssl.results.store.os.write", _full_after(one_and_a_half_rows))
    with pytest.raises(OSError, match=r"results\.csv.*No space left.*none of its 3 rows was written"):
        append_rows(path, batch)
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert append_rows(path, batch, skip_existing=True) == 3  # the re-run writes them all
    assert [r.run_id for r in read_rows(path)] == [f"w{i}" for i in range(5)]
    _assert_all_lines_complete(path)


def test_a_full_disk_while_the_configs_sidecar_is_written_keeps_the_old_one(tmp_path, monkeypatch) -> None:
    results = tmp_path / "results.csv"
    record_config(results, "aaa", {"method": "moco"})
    before = configs_path(results).read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("rsssl.results.store.os.fsync", full)
    with pytest.raises(OSError, match="No space left"):
        record_config(results, "bbb", {"method": "simclr"})
    assert configs_path(results).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.configs.json", "results.csv.lock"]


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


LEGACY_HEADER = (
    "time,run_id,method,backbone,pretrain_data,eval_data,protocol,budget,seed,metric,value,interval,"
    "checkpoint_hash,git_commit,config_hash\n"
)
LEGACY_LINE = (
    "2026-11-22T14:09:30+00:00,/work/main/runs/bench/moco_resnet18_synthetic/20261122-140121-571621,moco,"
    "resnet18,synthetic,synthetic,knn,5/class,0,oa,0.39453125,,ff5fece8c311b3a8,53ce9b8,449c178bf313\n"
)


def test_new_columns_round_trip_and_default() -> None:
    assert COLUMNS[-2:] == ("pretrain_seed", "eval_hash")
    assert _row(1, pretrain_seed=3, eval_hash="e1").pretrain_seed == 3
    assert _row(1).pretrain_seed is None and _row(1).eval_hash == ""
    with pytest.raises(ValueError, match="pretrain_seed"):
        _row(1, pretrain_seed="3")


def test_pretrain_seed_and_eval_hash_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    rows = [_row(1, pretrain_seed=3, eval_hash="e1"), _row(2)]
    append_rows(path, rows)
    assert path.read_text().splitlines()[1].endswith(",cfg,3,e1")
    assert path.read_text().splitlines()[2].endswith(",cfg,,")  # None is stored as ""
    assert read_rows(path) == rows


def test_old_schema_store_is_read_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text(LEGACY_HEADER + LEGACY_LINE)
    (row,) = read_rows(path)
    assert row.value == 0.39453125 and row.config_hash == "449c178bf313"
    assert row.pretrain_seed is None and row.eval_hash == ""


def test_appending_to_an_old_schema_store_migrates_it_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text(LEGACY_HEADER + LEGACY_LINE + LEGACY_LINE.replace("0,oa", "1,oa") + "2026-11,partial")
    old = read_rows(path)
    new = _row(5, pretrain_seed=0, eval_hash="abc")
    assert append_rows(path, [new]) == 1
    assert path.read_text().startswith(HEADER)
    assert read_rows(path) == [*old, new]
    _assert_all_lines_complete(path)
    assert [p.name for p in tmp_path.iterdir() if p.name != "results.csv.lock"] == ["results.csv"]


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_line_separator_characters_in_a_cell_round_trip(tmp_path: Path, char: str) -> None:
    path = tmp_path / "results.csv"
    rows = [_row(1, run_id=f"a{char}b", method=f"m{char}"), _row(2)]
    append_rows(path, rows[:1])
    append_rows(path, rows[1:])
    assert read_rows(path) == rows


def test_configs_sidecar_maps_each_config_hash_to_its_configuration(tmp_path: Path) -> None:
    results = tmp_path / "results.csv"
    assert configs_path(results) == tmp_path / "results.configs.json"
    assert read_configs(results) == {}
    moco = {"method": {"name": "moco", "temperature": 0.2}, "data": {"tile_size": 32}}
    record_config(results, "aaa", moco)
    record_config(results, "bbb", {"method": {"name": "moco", "temperature": 0.1}, "data": {"tile_size": 32}})
    record_config(results, "aaa", moco)  # the same pair again is a no-op
    assert read_configs(results) == {
        "aaa": moco,
        "bbb": {"method": {"name": "moco", "temperature": 0.1}, "data": {"tile_size": 32}},
    }
    with pytest.raises(ValueError, match="already names another configuration"):
        record_config(results, "aaa", {"method": {"name": "simclr"}})
    assert read_configs(results)["aaa"] == moco
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.configs.json", "results.csv.lock"]


def test_run_ids_are_relative_to_the_runs_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert (
        relative_run_id(runs / "moco_r18_synthetic" / "20260101-1", runs) == "moco_r18_synthetic/20260101-1"
    )
    with pytest.raises(ValueError, match="not inside the runs folder"):
        relative_run_id(tmp_path / "elsewhere" / "x", runs)


def test_old_absolute_run_ids_are_made_relative(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text(
        LEGACY_HEADER
        + LEGACY_LINE
        + LEGACY_LINE.replace(
            "/work/main/runs/bench/moco_resnet18_synthetic/20261122-140121-571621", "baseline:image_stats:4"
        )
    )
    assert make_run_ids_relative(path, "/work/main/runs") == 1
    assert [r.run_id for r in read_rows(path)] == [
        "bench/moco_resnet18_synthetic/20261122-140121-571621",
        "baseline:image_stats:4",
    ]
    assert path.read_text().startswith(HEADER)
    append_rows(path, [_row(9, run_id="/elsewhere/x/y")])
    before = path.read_text()
    with pytest.raises(ValueError, match="not inside the runs folder"):
        make_run_ids_relative(path, "/work/main/runs")
    assert path.read_text() == before  # nothing written
