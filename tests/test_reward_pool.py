"""RewardScorer's per-sample alarm, and RewardPool on a real local Ray: order, stalls, dead and stuck workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable, Iterator

import pytest
import ray

from reward import score
from reward.pool import RewardPool
from reward.scorer import WARMUP_ITEMS, Item, RewardScorer
from rl.config import RewardConfig
from rl.problems import PROBLEM_TYPES
from rl.types import RewardBreakdown

STALL = "9^{9^{9^{9}}}"
TIMED_OUT = RewardBreakdown(a1=0.0, a2=0.0, format=0.0, fallback=0.0, total=0.0, timed_out=True)


def response(a1: str, a2: str) -> str:
    return f"\\boxed{{{a1}}}<think>Checking the frames.</think>\\boxed{{{a2}}}"


def mixed_items(n: int) -> list[Item]:
    """n distinct items over all problem types; math ones cost a few ms each, the rest microseconds."""
    items: list[Item] = []
    for k in range(n):
        kind = k % 4
        if kind in (0, 1):
            gt = f"\\frac{{{k}}}{{{k + 1}}}"
            items.append((response(f"{k}/{k + 2}", f"\\frac{{{2 * k}}}{{{2 * k + 2}}}"), gt, "math"))
        elif kind == 2:
            items.append((response("ABCD"[k % 4], "(B)"), "B", "exact_match"))
        else:
            items.append((response(f"[{k}, {k + 4}]", f"{k + 1} to {k + 3}"), [[k, k + 2], [k + 1, k + 3]], "iou"))
    return items


def stall_item() -> Item:
    return (response(STALL, STALL), "2", "math")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def in_background(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def when_new_worker_busy(pool: RewardPool, seen: set[int], after_s: float) -> int:
    """Wait for a worker pid not in `seen` (it is up and gets work at once), then `after_s` more."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fresh = [pid for pid in pool.worker_pids if pid not in seen]
        if fresh:
            seen.add(fresh[0])
            time.sleep(after_s)
            return fresh[0]
        time.sleep(0.01)
    raise AssertionError("no new reward worker came up within 60 s")


# -- RewardScorer, in this process


def test_scorer_refuses_a_thread_other_than_main() -> None:
    errors: list[BaseException] = []

    def build() -> None:
        try:
            RewardScorer()
        except RuntimeError as exc:
            errors.append(exc)

    thread = in_background(build)
    thread.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])


def test_scorer_puts_back_an_outer_alarm() -> None:
    fired: list[int] = []

    def outer(signum: int, frame: object) -> None:
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, outer)
    try:
        signal.setitimer(signal.ITIMER_REAL, 100.0)
        RewardScorer(timeout_s=1.0).score_one(*mixed_items(1)[0])
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 90.0 < remaining <= 100.0
        assert signal.getsignal(signal.SIGALRM) is outer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired == []


def test_scorer_stream_groups_results_in_order() -> None:
    items = mixed_items(12)
    groups = list(RewardScorer().score_stream(items, flush_s=0.0))
    assert [len(group) for group in groups] == [1] * 12
    assert [result for group in groups for result in group] == [score(*item) for item in items]
    assert [len(group) for group in RewardScorer().score_stream(items, flush_s=60.0)] == [12]


def test_warm_up_covers_every_problem_type_and_leaves_no_count() -> None:
    assert {problem_type for _, _, problem_type in WARMUP_ITEMS} == set(PROBLEM_TYPES)
    scorer = RewardScorer()
    scorer.warm_up()
    assert scorer.timeouts == 0
    assert all(result.format == 1.0 for result in scorer.score_many(WARMUP_ITEMS)), "warm-up items are well formed"


# -- RewardPool, on Ray


def test_pool_from_config_takes_weights_workers_and_limit() -> None:
    cfg = RewardConfig(w1=1.0, w2=2.0, lambda_fmt=0.5, alpha=0.25, fallback_threshold=0.5, num_workers=1, timeout_s=3.0)
    pool = RewardPool.from_config(cfg, num_cpus=0.5)
    try:
        pool.wait_ready()
        assert (len(pool.worker_pids), pool.timeout_s) == (1, 3.0)
        [result] = pool.score_batch([(response("Let's analyze the problem step by step.", "A"), "A", "exact_match")])
        assert result == RewardBreakdown(a1=0.0, a2=1.0, format=1.0, fallback=1.0, total=2.0 + 0.5 + 0.25)
    finally:
        pool.shutdown()


def test_pool_refuses_to_score_after_shutdown() -> None:
    pool = RewardPool(num_workers=1, timeout_s=5.0, num_cpus=0.5)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.score_batch(mixed_items(2))


def test_pool_that_cannot_start_says_so_within_its_start_timeout() -> None:
    pool = RewardPool(num_workers=1, timeout_s=5.0, num_cpus=64, start_timeout_s=1.0, shutdown_wait_s=0.5)
    start = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="did not start within 1 s; each asks Ray for 64 CPU"):
            pool.wait_ready()
    finally:
        pool.shutdown()
    assert time.monotonic() - start < 10.0


def test_pools_shut_down_while_starting_leave_every_cpu_to_the_next() -> None:
    for _ in range(4):
        RewardPool(num_workers=2, timeout_s=5.0, num_cpus=0.5).shutdown()
    with RewardPool(num_workers=2, timeout_s=5.0, start_timeout_s=60.0) as pool:
        pool.wait_ready()
        assert len(pool.worker_pids) == 2


def test_pool_preserves_input_order() -> None:
    items = mixed_items(400)
    with RewardPool(num_workers=2, timeout_s=5.0, min_chunk=4, max_chunk=16) as pool:
        results = pool.score_batch(items)
        assert results == [score(*item) for item in items]
        assert pool.score_batch([]) == []
        assert (pool.timeouts, pool.restarts) == (0, 0)


def test_pool_rejects_an_unknown_problem_type_before_scoring() -> None:
    with RewardPool(num_workers=1, timeout_s=5.0, num_cpus=0.5) as pool:
        with pytest.raises(ValueError, match="unknown problem_type 'ocr'"):
            pool.score_batch(mixed_items(3) + [(response("A", "A"), "A", "ocr")])
        assert pool.score_batch(mixed_items(3)) == [score(*item) for item in mixed_items(3)]


def test_pool_stalling_sample_scores_zero_is_counted_and_the_pool_goes_on() -> None:
    items = mixed_items(60)
    items.insert(30, stall_item())
    with RewardPool(num_workers=2, timeout_s=1.0) as pool:
        pool.wait_ready()
        start = time.monotonic()
        results = pool.score_batch(items)
        elapsed = time.monotonic() - start
        assert results[30] == TIMED_OUT
        assert results[:30] + results[31:] == [score(*item) for item in mixed_items(60)]
        assert (pool.timeouts, pool.restarts) == (1, 0)
        # the per-sample limit, not math-verify's 5 s per call, nor the minutes the tower would take
        assert 1.0 <= elapsed < 3.0
        again = pool.score_batch([stall_item()] + mixed_items(4))
        assert again == [TIMED_OUT] + [score(*item) for item in mixed_items(4)]
        assert (pool.timeouts, pool.restarts) == (2, 0)


def test_pool_replaces_a_worker_killed_mid_batch() -> None:
    items = mixed_items(1600)
    with RewardPool(num_workers=2, timeout_s=5.0) as pool:
        pool.wait_ready()
        victim = pool.worker_pids[0]
        killed_at: list[float] = []

        def kill() -> None:
            time.sleep(0.3)
            os.kill(victim, signal.SIGKILL)
            killed_at.append(time.monotonic())

        in_background(kill)
        results = pool.score_batch(items)
        assert killed_at and time.monotonic() > killed_at[0]
        assert results == [score(*item) for item in items]
        assert (pool.timeouts, pool.restarts) == (0, 1)
        assert victim not in pool.worker_pids


def test_pool_raises_when_a_chunk_dies_twice_and_recovers() -> None:
    items = mixed_items(1600)
    with RewardPool(num_workers=1, timeout_s=5.0, max_chunk=2000) as pool:
        seen: set[int] = set()

        def kill_twice() -> None:
            for _ in range(2):
                os.kill(when_new_worker_busy(pool, seen, 0.3), signal.SIGKILL)

        in_background(kill_twice)
        with pytest.raises(RuntimeError, match="reward workers died twice on samples"):
            pool.score_batch(items)
        assert pool.restarts == 2
        assert pool.score_batch(items[:8]) == [score(*item) for item in items[:8]]


def test_pool_kills_a_worker_stuck_past_its_deadline_and_reruns_its_samples() -> None:
    items = mixed_items(1600)
    with RewardPool(num_workers=1, timeout_s=1.0, grace_s=0.5, num_cpus=0.5, max_chunk=2000) as pool:
        seen: set[int] = set()
        stopped = in_background(lambda: os.kill(when_new_worker_busy(pool, seen, 0.3), signal.SIGSTOP))
        results = pool.score_batch(items)
        stopped.join()
        assert results == [score(*item) for item in items]
        assert (pool.timeouts, pool.restarts) == (0, 1)


def test_pool_stuck_twice_on_the_same_samples_times_out_exactly_one() -> None:
    items = mixed_items(1600)
    with RewardPool(num_workers=1, timeout_s=1.0, grace_s=0.5, num_cpus=0.5, max_chunk=2000) as pool:
        seen: set[int] = set()

        def stop_twice() -> None:
            for _ in range(2):
                os.kill(when_new_worker_busy(pool, seen, 0.3), signal.SIGSTOP)

        stopper = in_background(stop_twice)
        results = pool.score_batch(items)
        stopper.join()
        expected = [score(*item) for item in items]
        blamed = [i for i, result in enumerate(results) if result.timed_out]
        assert len(blamed) == 1 and results[blamed[0]] == TIMED_OUT
        assert [r for i, r in enumerate(results) if i != blamed[0]] == [e for i, e in enumerate(expected) if i != blamed[0]]
        assert (pool.timeouts, pool.restarts) == (1, 2)
