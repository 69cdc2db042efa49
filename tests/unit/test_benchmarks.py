"""The benchmark harness's pure helpers: statistics, wrk output, profiles, autoscaling analysis."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks.autoscaling import analyse_step, counts
from benchmarks.harness import (
    Section,
    fmt,
    fold_categories,
    fold_profile,
    markdown_table,
    parse_wrk,
    percentile,
    summarize,
    wrk_ms,
)
from benchmarks.mlserver_baseline import settings, v2_body
from benchmarks.operator_scale import agent_of, latency_stats
from benchmarks.serving import ServingPlan, best_baseline, best_baseline_table, ratio_to_best
from benchmarks.serving_shadow import candidate_copy, shadow_rows

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:8000/v1/models/digits:predict
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    21.04ms    5.12ms  66.90ms   80.00%
    Req/Sec     1.53k   102.00     1.70k    70.00%
  Latency Distribution
     50%   20.01ms
     75%   22.50ms
     90%   26.00ms
     99%   66.90ms
  4590 requests in 3.00s, 1.20MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   1526.40
Transfer/sec:    410.00KB
"""


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_summarize_reports_median_min_max_and_ignores_missing_runs() -> None:
    assert summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    assert summarize([1.0, math.nan])["runs"] == 1
    assert summarize([])["runs"] == 0


def test_fmt_shows_the_spread_only_for_several_runs() -> None:
    assert fmt(summarize([1.0, 2.0, 4.0]), 1) == "2.0 (1.0-4.0)"
    assert fmt(summarize([2.0]), 1) == "2.0"
    assert fmt(summarize([])) == "n/a"


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_wrk_durations_and_output() -> None:
    assert wrk_ms("812.00us") == pytest.approx(0.812)
    assert wrk_ms("1.50ms") == 1.5 and wrk_ms("2.01s") == pytest.approx(2010.0)
    with pytest.raises(ValueError):
        wrk_ms("fast")
    result = parse_wrk(WRK_OUTPUT)
    assert result == {"rps": 1526.4, "p50": 20.01, "p99": 66.9, "requests": 4590, "errors": 7}


def test_wrk_output_without_any_completed_request() -> None:
    result = parse_wrk("  0 requests in 1.00s, 0.00B read\nRequests/sec:      0.00\n")
    assert result["rps"] == 0.0 and math.isnan(result["p99"])


H2LOAD_OUTPUT = """finished in 3.00s, 1523.33 req/s, 190.42KB/s
requests: 4570 total, 4571 started, 4570 done, 4568 succeeded, 2 failed, 2 errored, 0 timeout
status codes: 4568 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_h2load_output_and_its_log_of_request_times() -> None:
    from benchmarks.serving_grpc import parse_h2load

    result = parse_h2load(H2LOAD_OUTPUT, [1.0, 2.0, 3.0, 100.0])
    assert result == {"rps": 1523.33, "p50": 2.5, "p99": pytest.approx(97.09), "requests": 4570.0, "errors": 2.0}
    with pytest.raises(RuntimeError, match="unexpected h2load output"):
        parse_h2load("connect failed", [])


def test_fold_profile_counts_self_and_total_time_per_function() -> None:
    lines = [
        "<module> (app.py:9);handle (site-packages/ray/serve/replica.py:10);parse (app.py:3) 6",
        "<module> (app.py:9);handle (site-packages/ray/serve/replica.py:12) 4",
        "garbage",
    ]
    profile = fold_profile(lines, top=5)
    assert profile["samples"] == 10
    assert profile["self"][0] == {"function": "parse (app.py)", "share": 0.6, "samples": 6}
    assert profile["self"][1]["function"] == "handle (ray/serve/replica.py)"
    total = {entry["function"]: entry["share"] for entry in profile["total"]}
    assert total["handle (ray/serve/replica.py)"] == 1.0 and total["parse (app.py)"] == 0.6


def test_fold_categories_first_matching_rule_wins() -> None:
    lines = [
        "main (a.py:1);Model.fit (k.py:2);Model.evaluate (k.py:3) 2",
        "main (a.py:1);Model.fit (k.py:2);Function.__call__ (f.py:4) 5",
        "main (a.py:1);load (d.py:9) 3",
        "Thread.run (threading.py:982) 10",
    ]
    rules = [
        ("idle", ["leaf:Thread.run ("]),
        ("setup", ["!Model.fit ("]),
        ("validation", ["Model.evaluate ("]),
        ("steps", ["Function.__call__ ("]),
    ]
    assert fold_categories(lines, rules) == {"idle": 0.5, "steps": 0.25, "setup": 0.15, "validation": 0.1}
    assert fold_categories([], rules) == {}


def _sample(t: float, running: int, starting: int = 0, stopping: int = 0) -> dict[str, object]:
    states = {"RUNNING": running}
    if starting:
        states["STARTING"] = starting
    if stopping:
        states["STOPPING"] = stopping
    return {"t": t, "states": states}


def test_autoscaling_step_analysis() -> None:
    samples = [
        _sample(99, 1),
        _sample(112, 1, starting=3),
        _sample(125, 4),
        _sample(140, 3),
        _sample(150, 1, stopping=2),
        _sample(155, 1),
    ]
    windows = [
        {"start": 97, "end": 98, "p99": 10.0, "rps": 100, "requests": 100, "errors": 0},
        {"start": 100, "end": 110, "p99": 50.0, "rps": 500, "requests": 5000, "errors": 0},
        {"start": 110, "end": 120, "p99": 70.0, "rps": 400, "requests": 4000, "errors": 2},
    ]
    figures = analyse_step(samples, windows, step_start=100, step_end=120, min_replicas=1)
    assert figures["decided_s"] == 12 and figures["up_s"] == 25 and figures["peak_replicas"] == 4
    assert figures["back_to_min_s"] == 30  # replicas being stopped no longer count
    assert figures["p99_light_ms"] == 10.0 and figures["p99_step_median_ms"] == 60.0
    assert figures["p99_step_max_ms"] == 70.0 and figures["rps_step"] == 450 and figures["errors"] == 2
    assert counts(_sample(0, 2, starting=1, stopping=1)) == (2, 3)


def test_autoscaling_without_a_scale_up_reports_none() -> None:
    figures = analyse_step([_sample(101, 1), _sample(130, 1)], [], 100, 120, 1)
    assert figures["decided_s"] is None and figures["up_s"] is None and figures["back_to_min_s"] is None


def test_operator_helpers() -> None:
    assert agent_of("kmock/0.8 aiohttp/3.14") == "benchmark"
    assert agent_of("kopf/1.45.2") == "kopf"
    assert agent_of("OpenAPI-Generator/36.0.3/python") == "client"
    stats = latency_stats([0.1, 0.2, 0.3])
    assert stats["count"] == 3 and stats["p50"] == 0.2 and stats["max"] == 0.3


def test_training_figures_time_the_target_and_the_fixed_cost() -> None:
    from benchmarks.training import _figures

    # launched at 100; epochs end at 110, 112, 114 over 1,000 rows: 500 samples/s, 2 s an epoch
    result = {"ends": [110.0, 112.0, 114.0], "accuracy": [0.5, 0.92, 0.95]}
    figures = _figures(result, 1000, 100.0, wall=20.0, target=0.9)
    assert figures["rate"] == 500 and figures["epoch_seconds"] == 2
    assert figures["first_epoch_s"] == 10 and figures["target_s"] == 12
    assert figures["fixed_s"] == 14  # 20 s wall less 3 epochs of 2 s
    assert math.isnan(_figures(result, 1000, 100.0, 20.0, target=0.99)["target_s"])


def test_the_generated_training_data_is_the_same_every_time(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from benchmarks.training import augmented_digits

    first = pq.read_table(augmented_digits(300, tmp_path / "a"))
    second = pq.read_table(augmented_digits(300, tmp_path / "b"))
    assert first.equals(second) and first.num_rows == 300 and first.num_columns == 65
    assert set(first.column("label").to_pylist()) == set(range(10))


def test_the_shadow_candidate_is_the_served_model_published_as_version_2(tmp_path: Any) -> None:
    served = tmp_path / "models" / "digits" / "1"
    served.mkdir(parents=True)
    (served / "model.json").write_text(json.dumps({"version": 1, "task": "classification"}))
    (served / "saved_model.pb").write_bytes(b"weights")
    candidate = Path(candidate_copy(str(served), tmp_path, "digits"))
    assert candidate.name == "2" and (candidate / "saved_model.pb").read_bytes() == b"weights"
    assert json.loads((candidate / "model.json").read_text()) == {"version": 2, "task": "classification"}
    assert json.loads((served / "model.json").read_text())["version"] == 1


def test_the_shadow_rows_sit_next_to_each_other_with_the_candidate_counts() -> None:
    def run(p99: float) -> dict[str, Any]:
        return {key: summarize([value]) for key, value in {"rps": 900.0, "p50": 30.0, "p99": p99, "errors": 0}.items()}

    figures = {"alone": run(41.0), "shadow": run(55.5), "candidate": {"scored": 9000, "dropped": 12}}
    alone, shadow = shadow_rows("digits", figures)
    assert alone[:2] == ["digits", "32, no shadow"] and alone[3] == "900 / 30.0 / 41.0"
    assert shadow[:2] == ["digits", "32, shadow 100%"] and shadow[3] == "900 / 30.0 / 55.5"
    assert shadow[4] == "shadow scored 9000, dropped 12"


def _cell(rps: float) -> dict[str, dict[str, float]]:
    return {key: summarize([value]) for key, value in {"rps": rps, "p50": 1.0, "p99": 2.0, "errors": 0.0}.items()}


def test_ours_is_compared_with_the_best_baseline_of_each_cell() -> None:
    heavy = {
        "FastAPI baseline": {"1": _cell(100), "8": _cell(150)},
        "MLServer, 1 worker": {"1": _cell(90), "8": _cell(250)},
        "MLServer, 2 workers": {"1": _cell(80), "8": _cell(400)},
        "trainserve": {"1": _cell(300), "8": _cell(800)},
        "trainserve, runtime tensorflow": {"1": _cell(150), "8": _cell(300)},
        "in-process": {"rps": summarize([1000.0])},
    }
    assert best_baseline(heavy, 1) == ("FastAPI baseline", 100)
    assert best_baseline(heavy, 8) == ("MLServer, 2 workers", 400)
    assert ratio_to_best(heavy, "trainserve", 8) == 2.0
    assert ratio_to_best(heavy, "trainserve, runtime tensorflow", 8) == 0.75
    plan = ServingPlan(models=["heavy"], concurrency=[1, 8])
    table = best_baseline_table({"heavy": heavy}, plan).splitlines()
    assert table[0] == (
        "| model | c | baselines req/s | best baseline req/s | trainserve req/s (ratio) "
        "| trainserve, runtime tensorflow req/s (ratio) |"
    )
    baselines = "FastAPI 100, MLServer, 1 worker 90, MLServer, 2 workers 80"
    assert table[2] == f"| heavy | 1 | {baselines} | FastAPI baseline: 100 | 300 (3.00x) | 150 (1.50x) |"
    baselines = "FastAPI 150, MLServer, 1 worker 250, MLServer, 2 workers 400"
    assert table[3] == f"| heavy | 8 | {baselines} | MLServer, 2 workers: 400 | 800 (2.00x) | 300 (0.75x) |"


def test_the_headline_puts_each_of_our_runtimes_against_the_best_baseline() -> None:
    from benchmarks.run import headline

    heavy = {
        "FastAPI baseline": {"1": _cell(100), "32": _cell(150)},
        "MLServer, 2 workers": {"1": _cell(80), "32": _cell(400)},
        "trainserve": {"1": _cell(300), "32": _cell(800)},
        "trainserve, runtime tensorflow": {"1": _cell(150), "32": _cell(300)},
    }
    serving = Section(name="serving", title="Serving", figures={"figures": {"heavy": heavy}}, table="")
    rows = [line for line in headline({"serving": serving}).splitlines() if line.startswith("| serving")]
    assert [row.split(" | ")[-1] for row in rows] == ["3.00x |", "1.50x |", "2.00x |", "0.75x |"]
    assert "best: MLServer, 2 workers 400" in rows[3] and "c=32, trainserve, runtime tensorflow" in rows[3]


def test_the_mlserver_settings_turn_adaptive_batching_on() -> None:
    files = settings("/models/heavy/1", "heavy", 2, 8085)
    assert files["settings.json"]["parallel_workers"] == 2 and files["settings.json"]["http_port"] == 8085
    model = files["model-settings.json"]
    assert model["max_batch_size"] > 1 and model["max_batch_time"] > 0  # MLServer batches only with both
    assert model["parameters"] == {"uri": "/models/heavy/1"}
    request = json.loads(v2_body(4))["inputs"][0]
    assert request["shape"] == [1, 4] and len(request["data"]) == 4 and request["datatype"] == "FP32"
