"""The results store: concurrent writers lose no row, truncated lines are skipped, NaN is refused."""

import json
import multiprocessing as mp
import os

import pytest

from ablate.results import ResultsError, append_rows, read_results


def _writer(path, worker, n):
    for i in range(n):
        append_rows(path, [{"worker": worker, "i": i, "metric": "m", "value": float(i), "pad": "x" * 3000}])


def test_two_concurrent_writers_lose_no_row(tmp_path):
    path = tmp_path / "results.jsonl"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 200)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    df = read_results(path)
    assert len(df) == 400
    assert sorted(df.groupby("worker")["i"].nunique().tolist()) == [200, 200]
    # Every line is complete JSON.
    for line in path.read_text().splitlines():
        json.loads(line)


def test_truncated_last_line_is_skipped_and_next_append_starts_fresh(tmp_path):
    path = tmp_path / "r.jsonl"
    append_rows(path, [{"metric": "a", "value": 1.0}])
    with open(path, "a") as f:
        f.write('{"metric": "b", "val')  # a writer killed mid-line
    append_rows(path, [{"metric": "c", "value": 3.0}])
    with pytest.warns(UserWarning, match="truncated"):
        df = read_results(path)
    assert df["metric"].tolist() == ["a", "c"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(tmp_path, bad):
    path = tmp_path / "r.jsonl"
    with pytest.raises(ResultsError, match="non-finite"):
        append_rows(path, [{"metric": "fid", "value": bad}])
    assert not path.exists() or os.path.getsize(path) == 0


def test_missing_store_reads_empty(tmp_path):
    assert read_results(tmp_path / "none.jsonl").empty


def test_latest_keeps_one_row_per_point_metric_and_label(tmp_path):
    """Ad-hoc rows (row None) of different points are all kept; a redo of a point supersedes it; the same point
    under two labels keeps both."""
    p = tmp_path / "r.jsonl"
    base = {"metric": "eval/fid20/x", "status": "ok", "study": "adhoc", "row": None}
    append_rows(p, [{**base, "point_key": k, "value": float(i)} for i, k in enumerate("abc")])
    append_rows(p, [{**base, "point_key": "a", "value": 9.0}])  # redo of point a
    append_rows(p, [{**base, "point_key": "b", "study": "s", "row": "r", "value": 1.0, "copied_from": "adhoc"}])
    append_rows(p, [{"status": "failed", "error": "x"}])  # no point_key: always kept
    df = read_results(p)
    assert len(df) == 5 and df.attrs["superseded"] == 1
    assert df[df.point_key == "a"].value.tolist() == [9.0]
    assert sorted(df[df.point_key == "b"].study) == ["adhoc", "s"]
