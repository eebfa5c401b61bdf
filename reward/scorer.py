"""Scoring in one process under a wall-clock alarm per sample; the body of a reward worker.

math-verify's own timeout is `signal.alarm` per call (parse gt, parse pred, each verify pair),
in whole seconds, and on expiry it returns a silent 0; its `finally: signal.alarm(0)` would also
cancel any alarm of ours. So RewardScorer turns math-verify's alarms off and arms one
`setitimer(ITIMER_REAL)` around each whole sample: the kernel delivers SIGALRM after exactly
`timeout_s`, the handler raises SampleTimeout (a BaseException, which math-verify's
`except Exception` cannot swallow), and the sample scores 0 with `timed_out=True`. Python runs
signal handlers on the main thread only, so this class refuses any other thread. A sample stuck
where no handler can run (a C call that never checks for signals) is the pool's job: it kills the
worker (reward.pool).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any, Iterable, Iterator, Sequence

from reward.dual import score
from rl.types import Answer, RewardBreakdown

Item = tuple[str, Answer, str]
"""(response, answer, problem_type)."""


def _warmup_item(a1: str, a2: str, answer: Answer, problem_type: str) -> Item:
    return (f"\\boxed{{{a1}}}<think>.</think>\\boxed{{{a2}}}", answer, problem_type)


WARMUP_ITEMS: list[Item] = [
    _warmup_item("\\frac{6}{8}", "3/4", "\\frac{3}{4}", "math"),
    _warmup_item("\\sqrt{12}", "2\\sqrt{3}", "2\\sqrt{3}", "math"),
    _warmup_item("3\\pi", "\\frac{6\\pi}{2}", "3\\pi", "math"),
    _warmup_item("6\\cdot7", "42", "42", "math"),
    _warmup_item("0.5", "x^2+1", "\\frac{1}{2}", "math"),
    _warmup_item("(B)", "B. a red car", "B", "exact_match"),
    _warmup_item("Yes.", "no", "yes", "exact_match"),
    _warmup_item("[1.0, 2.5]", "1.0 to 2.5", [1.0, 2.0], "iou"),
    _warmup_item("(3.5, 1.0)", "no idea", [1.0, 2.0], "iou"),
    _warmup_item("A <> [1.0, 3.0]", "B <> 1.0 to 2.0", {"answer": "A", "segment": [1.0, 2.0]}, "gqa"),
]
"""One item per answer form the task rewards meet: the first of each costs a process ~0.2 s in all
(math-verify compiles its grammars and sympy imports its modules on first use)."""


def timed_out() -> RewardBreakdown:
    """The breakdown of a sample past its limit: it scores 0."""
    return RewardBreakdown(a1=0.0, a2=0.0, format=0.0, fallback=0.0, total=0.0, timed_out=True)


class SampleTimeout(BaseException):
    """A sample ran past its wall-clock limit."""


class RewardScorer:
    """Scores items in the calling process, each within `timeout_s` seconds of wall clock.

    `weights` are score()'s keywords (w1, w2, lambda_fmt, alpha, fallback_threshold).
    """

    def __init__(self, timeout_s: float = 5.0, **weights: float) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "RewardScorer needs the main thread of its process: its per-sample alarm is a signal, and "
                "Python runs signal handlers on the main thread only (use processes or synchronous Ray actors)"
            )
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.weights = weights
        self.timeouts = 0
        self._armed = False
        self._fired = False
        # math-verify warns once that its own timeout is off; this class is that timeout.
        logging.getLogger("math_verify").setLevel(logging.ERROR)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._armed:
            self._armed = False
            self._fired = True
            raise SampleTimeout

    def score_one(self, response: str, answer: Answer, problem_type: str) -> RewardBreakdown:
        """score() under the alarm; timed_out() (all zero) past `timeout_s`.

        An alarm already set in the process (pytest-timeout, say) is put back afterwards, less the
        time spent, so the two nest.
        """
        self._fired = False
        previous = signal.signal(signal.SIGALRM, self._on_alarm)
        start = time.monotonic()
        self._armed = True
        outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            result = score(response, answer, problem_type, math_timeout_s=None, **self.weights)
            self._armed = False
        except SampleTimeout:
            pass
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
            if outer_delay:
                remaining = max(outer_delay - (time.monotonic() - start), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, remaining, outer_interval)
        if self._fired:
            self.timeouts += 1
            return timed_out()
        return result

    def warm_up(self) -> None:
        """Pay the first-use costs (WARMUP_ITEMS) now, so the first real batch runs at full speed."""
        self.score_many(WARMUP_ITEMS)
        self.timeouts = 0

    def score_many(self, items: Iterable[Item]) -> list[RewardBreakdown]:
        """Score items in order."""
        return [self.score_one(*item) for item in items]

    def score_stream(self, items: Sequence[Item], flush_s: float) -> Iterator[list[RewardBreakdown]]:
        """Score items in order, yielding the results so far whenever `flush_s` has passed, and at the end.

        Each yield is a message to the pool (about 0.2 ms through Ray), so results are grouped by time;
        the gap between two yields is at most `flush_s` plus one sample, which the pool's deadline uses.
        With `flush_s` 0 every sample is its own message, so a stuck sample is identified exactly.
        """
        group: list[RewardBreakdown] = []
        last = time.monotonic()
        for item in items:
            group.append(self.score_one(*item))
            now = time.monotonic()
            if now - last >= flush_s:
                yield group
                group = []
                last = now
        if group:
            yield group
