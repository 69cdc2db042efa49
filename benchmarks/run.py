"""The whole benchmark: serving, training, autoscaling and the operator, one after another, one result set.

Each part runs alone (the machine has few cores; two heavy things at once would measure each other), then the
run writes ``benchmarks/results/<date>.json`` (every figure, the machine's facts, the settings), ``<date>.md``
(the tables, notes and plots), ``<date>.<part>.png``, and prints the tables. A run of some parts (``--only``)
writes ``<date>.only-<parts>.*`` instead, so that it does not replace the whole set, and a quick run after a full
run of the same day writes ``<date>.quick.*``.

    python -m benchmarks [--quick] [--only serving training autoscaling reliability operator] [--profile]

``--quick`` (``make bench-quick``): a few minutes; fewer levels, shorter runs, one repeat, 100 jobs.
Full (``make bench``): serving at concurrency 1, 8, 32, 64 with 3 repeats, training with 1 and 2 workers,
two autoscaling steps, reliability (overload, a replica and a training worker killed), the operator with 100
and 1,000 jobs; about half an hour here.
``--profile``: py-spy on both digits servers during an extra c=1 run; the top functions go into the results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import autoscaling, operator_scale, reliability, serving, training
from .harness import RESULTS, Section, fmt, markdown_table, progress, stamp, write_combined
from .serving import best_baseline, our_servers, ratio_to_best

# Autoscaling right after serving: it takes over serving's last ModelService (the heavy model) and changes it
# in place to autoscale, instead of starting Ray once more.
PARTS = ("serving", "autoscaling", "training", "reliability", "operator")


def _mode_of(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["settings"]["mode"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def headline(sections: dict[str, Section]) -> str:
    """One row per figure the issue asks about: what we measured, against what."""
    rows: list[list[Any]] = []
    serving = sections.get("serving")
    if serving is not None:
        figures = serving.figures["figures"]
        for model in figures:
            measured = sorted(int(c) for c in figures[model]["trainserve"])
            # the levels the serving targets name (1 and 32), and the highest
            for c in sorted({measured[0], measured[-1]} | ({32} & set(measured))):
                best, _ = best_baseline(figures[model], c)
                base = figures[model][best][str(c)]
                for server in our_servers(figures[model]):
                    ours = figures[model][server][str(c)]
                    rows.append(
                        [
                            f"serving {model}, c={c}, {server}: req/s",
                            f"{ours['rps']['median']:.0f} (p99 {ours['p99']['median']:.1f} ms)",
                            f"best: {best} {base['rps']['median']:.0f} (p99 {base['p99']['median']:.1f} ms)",
                            f"{ratio_to_best(figures[model], server, c):.2f}x",
                        ]
                    )
    training = sections.get("training")
    if training is not None:
        for scenario, runs in training.figures["figures"].items():
            base = runs["plain model.fit"]["rate"]["median"]
            for name, figure in runs.items():
                if name == "plain model.fit":
                    continue
                rows.append(
                    [
                        f"training {scenario}, {name}: samples/s",
                        f"{figure['rate']['median']:.0f}; 1st epoch at {figure['first_epoch_s']['median']:.1f} s",
                        f"plain model.fit {base:.0f}",
                        f"{figure['rate']['median'] / base:.2f}x",
                    ]
                )
    autoscaling = sections.get("autoscaling")
    if autoscaling is not None:
        summary = autoscaling.figures["summary"]
        rows.append(
            [
                "autoscaling: s to a 2nd replica started / running",
                f"{fmt(summary['decided_s'], 1)} / {fmt(summary['up_s'], 1)}",
                f"upscale delay {autoscaling.figures['plan']['upscale_delay_seconds']:g} s",
                "",
            ]
        )
        rows.append(
            [
                "autoscaling: s after the load until minReplicas",
                fmt(summary["back_to_min_s"], 1),
                f"downscale delay {autoscaling.figures['plan']['downscale_delay_seconds']:g} s",
                "",
            ]
        )
    operator = sections.get("operator")
    if operator is not None:
        for jobs, figure in operator.figures["figures"].items():
            create = figure["create"]
            rows.append(
                [
                    f"operator, {jobs} jobs: s until every RayJob exists",
                    f"{fmt(create['all_done_s'], 1)}; create-to-RayJob p99 {create['p99_ms']['median'] / 1000:.1f} s",
                    f"{fmt(create['requests_per_reconcile'], 2)} requests per reconcile",
                    "",
                ]
            )
    return markdown_table(["figure", "trainserve", "baseline / setting", "ratio"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few minutes instead of about half an hour")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    parser.add_argument("--profile", action="store_true", help="py-spy the digits servers during a c=1 run")
    args = parser.parse_args(argv)
    if ({"serving", "autoscaling"} & set(args.only)) and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    mode = "quick" if args.quick else "full"
    serving_plan = serving.ServingPlan.quick() if args.quick else serving.ServingPlan.full()
    serving_plan.profile_seconds = (5.0 if args.quick else 10.0) if args.profile else 0.0
    training_plan = training.TrainingPlan.quick() if args.quick else training.TrainingPlan.full()
    training_plan.profile = args.profile
    scaling_plan = autoscaling.AutoscalingPlan.quick() if args.quick else autoscaling.AutoscalingPlan.full()
    operator_plan = operator_scale.OperatorPlan.quick() if args.quick else operator_scale.OperatorPlan.full()
    reliability_plan = reliability.ReliabilityPlan.quick() if args.quick else reliability.ReliabilityPlan.full()
    set_name = stamp() if set(args.only) == set(PARTS) else f"{stamp()}.only-{'+'.join(args.only)}"
    if args.quick and _mode_of(RESULTS / f"{set_name}.json") == "full":
        set_name += ".quick"  # never replace a full run's results with a quick run's
    prefix = f"{set_name}."
    started = time.monotonic()
    sections: dict[str, Section] = {}
    failures: dict[str, str] = {}

    with tempfile.TemporaryDirectory(prefix="trainserve-bench-") as folder:
        work = Path(folder)
        models: dict[str, str] = {}
        limits: dict[str, list[dict[str, float]]] = {}
        handed_over: list[serving.LocalServer] = []

        def need(*names: str, limit_seconds: float = 0.0, repeats: int = 1) -> dict[str, str]:
            """The benchmark models, built once (in a child process) and shared by serving and autoscaling."""
            missing = [n for n in names if n not in models]
            if missing:
                from .models import build

                progress(f"   building models {missing}")
                uris, measured = build(missing, work / "models", limit_seconds, repeats)
                models.update(uris)
                limits.update(measured)
            return models

        def serving_part() -> Section:
            need(*serving_plan.models, limit_seconds=serving_plan.in_process_seconds, repeats=serving_plan.repeats)
            keep = handed_over if "autoscaling" in args.only else None
            return serving.measure(serving_plan, models, limits, work, prefix, hand_over=keep)

        def autoscaling_part() -> Section:
            server = handed_over.pop() if handed_over else None
            model = need(scaling_plan.model)[scaling_plan.model]
            return autoscaling.measure(scaling_plan, model, work, prefix, server=server)

        parts: dict[str, Callable[[], Section]] = {
            "serving": serving_part,
            "autoscaling": autoscaling_part,
            "training": lambda: training.measure(training_plan, prefix, work),
            "reliability": lambda: reliability.measure(reliability_plan, need("heavy")["heavy"], work),
            "operator": lambda: operator_scale.measure(operator_plan, work, prefix),
        }
        for name in PARTS:
            if name not in args.only:
                continue
            progress(f"== {name} ({mode}), {time.monotonic() - started:.0f} s in")
            part_started = time.monotonic()
            try:
                sections[name] = parts[name]()
            except Exception as err:
                failures[name] = f"{type(err).__name__}: {err}"
                traceback.print_exc()
            progress(f"   {name}: {time.monotonic() - part_started:.0f} s")
        for server in handed_over:  # serving failed after starting it, or autoscaling was not run
            server.stop()

    wall = time.monotonic() - started
    ordered = [sections[name] for name in PARTS if name in sections]
    summary = Section(name="summary", title="Summary", figures={"failures": failures}, table=headline(sections))
    if failures:
        summary.notes = [f"{name} FAILED: {message}" for name, message in failures.items()]
    settings = {"mode": mode, "parts": args.only, "profile": args.profile}
    path = write_combined([summary, *ordered], settings, wall, set_name)
    print(path.with_suffix(".md").read_text())
    plots = [str(p) for s in ordered for p in s.plots]
    progress(f"written: {path}, {path.with_suffix('.md')}, {', '.join(plots)}; wall time {wall:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
