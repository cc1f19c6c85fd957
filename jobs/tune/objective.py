"""What a run is judged by: a metric, whether higher (max) or lower (min) is better, a threshold.

Every "is this better", "does it meet the threshold", the ≥/≤ shown next to the threshold and
the best-attempt lookup go through here, so the loop, the strategies, the report, `pushtune
runs`/`show`/`run` and the mail cannot disagree.

Only a real, finite number is a usable metric value: None, NaN, ±inf (and a bool or a text a
tampered store may hold) never meet a threshold, never beat anything and are never the best.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobs.errors import UserError

MODES = ("max", "min")
# A metric named like one of these (`loss`, `val_loss`, `mean_squared_error`, `error_rate`) is
# better when lower.
LOWER_IS_BETTER = re.compile(r"(?:^|_)(?:loss|error|err|mse|mae|rmse|msle|mape)(?:_|$)", re.IGNORECASE)


def default_mode(metric: str) -> str:
    """The mode a metric is judged by when none is given: min for a loss or error, else max."""
    return "min" if LOWER_IS_BETTER.search(metric) else "max"


def usable(value: Any) -> bool:
    """Whether the value is a metric that can be judged: a finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too big for a float
        return False


def scored(attempt: Mapping[str, Any]) -> bool:
    """Whether the attempt succeeded with a usable metric value (so it can be ranked)."""
    return attempt.get("status") == "ok" and usable(attempt.get("metric_value"))


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "max": higher is better; "min": lower is better
    threshold: float

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"mode must be max or min, not {self.mode!r}")

    @classmethod
    def of(cls, run: Mapping[str, Any]) -> Objective:
        """The objective a run (a store row, or anything with metric, mode and threshold) was
        started with; a UserError naming the run when its mode is neither max nor min."""
        try:
            return cls(run["metric"], run["mode"], run["threshold"])
        except UserError as exc:
            raise UserError(f"run {run['id']}: {exc}" if "id" in run else str(exc)) from None

    @property
    def direction(self) -> int:
        """+1 when higher is better, -1 when lower is."""
        return 1 if self.mode == "max" else -1

    @property
    def symbol(self) -> str:
        """How a value that meets the threshold compares with it: ≥ (max) or ≤ (min)."""
        return "≥" if self.mode == "max" else "≤"

    @property
    def miss_symbol(self) -> str:
        """How a value that misses the threshold compares with it: < (max) or > (min)."""
        return "<" if self.mode == "max" else ">"

    def sign(self, value: Any) -> str:
        """The symbol between the value and the threshold: `symbol` when it meets it, else `miss_symbol`."""
        return self.symbol if self.meets(value) else self.miss_symbol

    def target(self) -> str:
        """`accuracy ≥ 0.9`, `loss ≤ 0.3`: what a run aims for."""
        return f"{self.metric} {self.symbol} {self.threshold:g}"

    def improvement(self, a: float, b: float) -> float:
        """How much better `a` is than `b`, in the metric's units: positive when it is better,
        negative when worse. For numbers; NaN in, NaN out (which compares with nothing)."""
        return self.direction * (a - b)

    def better_than(self, a: Any, b: Any) -> bool:
        """Whether `a` is strictly better than `b`. A usable value beats an unusable one (None,
        NaN, inf: "nothing yet"); an unusable value is never better; equal values are not."""
        if not usable(a):
            return False
        if not usable(b):
            return True
        return self.improvement(a, b) > 0

    def meets(self, value: Any) -> bool:
        """Whether the value meets the threshold (equal to it meets it); never for an unusable value."""
        if not usable(value):
            return False
        return value >= self.threshold if self.mode == "max" else value <= self.threshold

    def ranked(self, attempts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The attempts that succeeded with a usable metric, best first; equals keep the order
        they were given in (attempts come in their number's order, so the earlier first). Its
        first is `best_attempt(attempts, self)`."""
        return sorted((a for a in attempts if scored(a)), key=lambda a: -self.direction * a["metric_value"])


def best_attempt(attempts: Iterable[dict[str, Any]], objective: Objective) -> dict[str, Any] | None:
    """The attempt with the best metric, or None: only attempts that succeeded (status "ok")
    with a finite metric count, and of equals the first in the given order (the lowest
    number) wins, so a later attempt must be strictly better to take over."""
    best = None
    for attempt in attempts:
        if scored(attempt) and (best is None or objective.better_than(attempt["metric_value"], best["metric_value"])):
            best = attempt
    return best
