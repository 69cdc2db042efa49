"""Automatic canary promotion: measuring one step (``CanaryWindows``) and judging it (``judge``)."""

from __future__ import annotations

from typing import Any

import pytest

from trainserve.api.figures import LATENCY_BUCKETS_MS, Figures, ShadowCounts
from trainserve.api.modelservice import AutoPromote
from trainserve.controllers.canary_windows import CanaryWindows
from trainserve.plans.canary import Verdict, judge, judge_shadow

CANARY = "s3://m/digits/2"
INTERVAL = 30
KEY = ("ml", "digits")


def figures(requests: int, errors: int = 0, latency_ms: float = 10) -> Figures:
    """Cumulative figures with every request in the latency bucket whose upper bound is ``latency_ms``."""
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    counts[LATENCY_BUCKETS_MS.index(latency_ms)] = requests
    return Figures(requests, errors, tuple(counts))


def body(
    share: int = 10, uri: str = CANARY, state: str = "Progressing", auto: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ModelService whose canary runs at ``share``, promoted automatically every ``INTERVAL`` seconds."""
    auto_promote = {"stepPercent": 20, "intervalSeconds": INTERVAL} if auto is None else auto
    canary_spec: dict[str, Any] = {"model": {"uri": uri}, "trafficPercent": 10}
    if auto_promote:
        canary_spec["autoPromote"] = auto_promote
    return {
        "metadata": {"name": "digits", "namespace": "ml"},
        "spec": {"model": {"uri": "s3://m/digits/1"}, "canary": canary_spec},
        "status": {"canary": {"uri": uri, "version": 2, "trafficPercent": share, "state": state}},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stats:
    """The canary's cumulative figures as the serve Service reports them; counts the reads."""

    def __init__(self, *answers: Figures | None):
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, uri: str) -> Figures | None:
        self.asked.append(uri)
        return self.answers.pop(0)


# --- CanaryWindows ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_first_due_step_records_a_baseline_and_waits_an_interval() -> None:
    windows, stats = CanaryWindows(clock=Clock()), Stats(figures(500))
    assert await windows.window(KEY, body(), stats) == (None, float(INTERVAL))
    assert stats.asked == [CANARY]


@pytest.mark.asyncio
async def test_before_the_interval_it_returns_the_time_left_without_reading_figures() -> None:
    clock = Clock()
    windows, stats = CanaryWindows(clock=clock), Stats(figures(500))
    await windows.window(KEY, body(), stats)
    clock.now += 10
    assert await windows.window(KEY, body(), stats) == (None, pytest.approx(INTERVAL - 10))
    assert len(stats.asked) == 1


@pytest.mark.asyncio
async def test_after_the_interval_it_returns_the_figures_since_the_baseline() -> None:
    clock = Clock()
    windows, stats = CanaryWindows(clock=clock), Stats(figures(500, errors=2), figures(650, errors=5))
    await windows.window(KEY, body(), stats)
    clock.now += INTERVAL
    window, wait = await windows.window(KEY, body(), stats)
    assert wait is None
    assert window == figures(150, errors=3)


@pytest.mark.asyncio
async def test_the_window_keeps_growing_from_the_same_baseline_until_the_share_changes() -> None:
    clock = Clock()
    windows, stats = CanaryWindows(clock=clock), Stats(figures(500), figures(550), figures(700))
    await windows.window(KEY, body(), stats)
    clock.now += INTERVAL
    assert (await windows.window(KEY, body(), stats))[0] == figures(50)  # too few: the plan waits
    clock.now += INTERVAL
    assert (await windows.window(KEY, body(), stats))[0] == figures(200)


@pytest.mark.parametrize(
    "next_step", [pytest.param(body(share=30), id="new-share"), pytest.param(body(uri="s3://m/digits/3"), id="new-uri")]
)
@pytest.mark.asyncio
async def test_a_new_share_or_model_starts_a_new_baseline(next_step: dict[str, Any]) -> None:
    clock = Clock()
    windows, stats = CanaryWindows(clock=clock), Stats(figures(500), figures(800), figures(900))
    await windows.window(KEY, body(), stats)
    clock.now += INTERVAL
    assert await windows.window(KEY, next_step, stats) == (None, float(INTERVAL))  # not judged on the old step
    clock.now += INTERVAL
    assert (await windows.window(KEY, next_step, stats))[0] == figures(100)  # since 800, not since 500


@pytest.mark.asyncio
async def test_unreadable_figures_wait_a_full_interval() -> None:
    clock = Clock()
    windows, stats = CanaryWindows(clock=clock), Stats(None, figures(500), None, figures(600))
    assert await windows.window(KEY, body(), stats) == (None, float(INTERVAL))
    assert await windows.window(KEY, body(), stats) == (None, float(INTERVAL))  # the baseline is taken now
    clock.now += INTERVAL
    assert await windows.window(KEY, body(), stats) == (None, float(INTERVAL))
    assert (await windows.window(KEY, body(), stats))[0] == figures(100)  # the baseline survived


@pytest.mark.asyncio
async def test_each_modelservice_has_its_own_baseline() -> None:
    clock = Clock()
    windows, stats = CanaryWindows(clock=clock), Stats(figures(500), figures(10), figures(700))
    await windows.window(KEY, body(), stats)
    clock.now += INTERVAL
    assert await windows.window(("ml", "iris"), body(), stats) == (None, float(INTERVAL))
    assert (await windows.window(KEY, body(), stats))[0] == figures(200)


@pytest.mark.parametrize(
    "not_due",
    [
        pytest.param(body(state="Paused"), id="paused"),
        pytest.param(body(state="RolledBack"), id="rolled-back"),
        pytest.param(body(auto={}), id="no-autoPromote"),
        pytest.param({**body(), "status": {}}, id="no-canary-status"),
        pytest.param({**body(), "spec": {"model": {"uri": "s3://m/digits/1"}}}, id="no-canary-spec"),
    ],
)
@pytest.mark.asyncio
async def test_a_step_that_is_not_due_is_forgotten(not_due: dict[str, Any]) -> None:
    clock = Clock()
    windows, stats = CanaryWindows(clock=clock), Stats(figures(500), figures(900))
    await windows.window(KEY, body(), stats)
    clock.now += INTERVAL
    assert await windows.window(KEY, not_due, stats) == (None, None)
    assert len(stats.asked) == 1  # no figures read for it
    assert await windows.window(KEY, body(), stats) == (None, float(INTERVAL))  # resumed: a new baseline


# --- judge ---------------------------------------------------------------------------------------------

POLICY = AutoPromote(step_percent=25, min_requests=100, max_error_rate=0.05, max_latency_p95_ms=250)


def test_no_window_waits() -> None:
    assert judge(None, POLICY, 50) == Verdict("wait", 50)


def test_too_few_requests_wait_even_when_failing() -> None:
    assert judge(figures(99, errors=99), POLICY, 50) == Verdict("wait", 50)


def test_a_healthy_step_raises_the_share_by_step_percent() -> None:
    assert judge(figures(100, errors=5, latency_ms=200), POLICY, 50) == Verdict("step", 75)


def test_an_error_rate_above_the_limit_rolls_back_and_names_it() -> None:
    verdict = judge(figures(100, errors=6), POLICY, 50)
    assert (verdict.action, verdict.share) == ("rollback", 0)
    assert verdict.breaches == ("error rate 6.00% > 5.00%",)


def test_a_p95_above_the_limit_rolls_back_and_names_it() -> None:
    verdict = judge(figures(100, latency_ms=300), POLICY, 50)  # p95 in (200, 300] ms
    assert (verdict.action, verdict.share) == ("rollback", 0)
    assert len(verdict.breaches) == 1 and verdict.breaches[0].startswith("p95 ")
    assert verdict.breaches[0].endswith("> 250.0 ms")


def test_both_breaches_are_named() -> None:
    verdict = judge(figures(200, errors=20, latency_ms=500), POLICY, 50)
    assert verdict.action == "rollback"
    assert [b.split()[0] for b in verdict.breaches] == ["error", "p95"]


def test_latency_is_not_checked_without_a_limit() -> None:
    policy = POLICY.model_copy(update={"max_latency_p95_ms": None})
    assert judge(figures(100, latency_ms=10000), policy, 50) == Verdict("step", 75)


@pytest.mark.parametrize("share", [75, 90])
def test_reaching_100_percent_promotes(share: int) -> None:
    assert judge(figures(100), POLICY, share) == Verdict("promote", 100)


# --- judge_shadow ----------------------------------------------------------------------------------------

SHADOW_POLICY = POLICY.model_copy(update={"min_agreement": 0.9})


def shadow(requests: int, rows: int, agreed: int, errors: int = 0, latency_ms: float = 10) -> ShadowCounts:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    counts[LATENCY_BUCKETS_MS.index(latency_ms)] = requests
    return ShadowCounts(requests, rows, agreed, errors, 0, tuple(counts))


def test_a_shadow_waits_for_min_requests_scored() -> None:
    assert judge_shadow(shadow(99, 99, 0), SHADOW_POLICY, 10) == Verdict("wait", 0)
    assert judge_shadow(None, SHADOW_POLICY, 10) == Verdict("wait", 0)


def test_a_shadow_that_agrees_is_promoted_or_moved_to_split_as_the_policy_says() -> None:
    assert judge_shadow(shadow(100, 200, 180), SHADOW_POLICY, 10) == Verdict("promote", 100)
    split = SHADOW_POLICY.model_copy(update={"after_shadow": "split"})
    assert judge_shadow(shadow(100, 200, 180), split, 10) == Verdict("split", 10)


def test_a_shadow_below_min_agreement_or_over_its_limits_is_rolled_back_with_each_breach_named() -> None:
    verdict = judge_shadow(shadow(100, 200, 179, errors=6, latency_ms=500), SHADOW_POLICY, 10)
    assert verdict.action == "rollback"
    assert verdict.breaches[0] == "agreement 89.50% < 90.00%"
    assert verdict.breaches[1] == "shadow error rate 6.00% > 5.00%"
    assert verdict.breaches[2].startswith("shadow p95 ") and verdict.breaches[2].endswith("> 250.0 ms")


def test_shadow_figures_window_like_request_figures() -> None:
    later = Figures(10, 0, figures(10).latency_counts, shadow(30, 60, 50))
    window = later.since(Figures(4, 0, figures(4).latency_counts, shadow(10, 20, 20)))
    assert (window.requests, window.shadow.requests, window.shadow.rows, window.shadow.agreed) == (6, 20, 40, 30)
    assert window.shadow.agreement == 0.75
    restarted = Figures(2, 0, figures(2).latency_counts, shadow(3, 3, 3)).since(later)
    assert restarted.shadow.requests == 3
