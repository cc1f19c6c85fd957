"""Tuning strategies behind one interface: given the run's history, what to try next.

Strategies keep no state of their own: everything they decide follows from the attempts in the
store, so a Jenkins job that runs one step at a time and `pushtune run` decide alike.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from jobs.errors import UserError
from jobs.tune import diagnosis, tweaks
from jobs.tune.objective import Objective, best_attempt, scored, usable


def config_key(source: str, params: dict) -> str:
    """Identity of a configuration: the same source and params are never run twice."""
    blob = source.encode() + b"\0" + json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass
class Candidate:
    source: str
    params: dict
    tweak_name: str | None = None
    tweak: str | None = None  # one line: what changed against the parent
    tweaks: list[str] = field(default_factory=list)  # every change since the pushed file
    parent: int | None = None
    reason: str | None = None  # why the strategy chose it (the evidence, then the move)

    @property
    def key(self) -> str:
        return config_key(self.source, self.params)


@dataclass
class History:
    """What a strategy sees: the pushed file and the attempts so far (each with its source)."""

    kind: str
    mode: str
    pushed_source: str
    base_params: dict
    attempts: list[dict]  # store rows plus "source" and "log" (the log's tail)
    space: dict[str, list] | None = None
    metric: str = "accuracy"
    threshold: float = 0.9
    min_delta: float = 0.0
    framework: str = ""  # with kind, the run's profile (jobs.train.profiles); "" when not known

    def tried(self) -> set[str]:
        return {a["config_key"] for a in self.attempts}

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, self.mode, self.threshold)

    def succeeded(self) -> list[dict]:
        """The attempts that succeeded with a finite metric (the ones that can be ranked)."""
        return [a for a in self.attempts if scored(a)]

    def best(self) -> dict | None:
        return best_attempt(self.attempts, self.objective)


class Strategy(Protocol):
    """Decides attempt 2 onwards (attempt 1 always runs the file as pushed)."""

    name: str

    def next_candidate(self, history: History) -> Candidate | None: ...


def first_candidate(history: History) -> Candidate:
    """Attempt 1 runs the file as pushed."""
    return Candidate(history.pushed_source, dict(history.base_params))


class LadderStrategy:
    """Start from the best attempt so far and apply the next untried tweak of the profile's ladder;
    a tweak that improved the metric is applied again before moving on."""

    name = "ladder"

    def next_candidate(self, history: History) -> Candidate | None:
        base = history.best() or history.attempts[0]
        order = list(tweaks.ladder_of(history.kind, history.framework))
        tried_names = {a["tweak_name"] for a in history.attempts if a["tweak_name"]}
        repeat = self._improving_tweak(history)
        names = ([repeat] if repeat else []) + [n for n in order if n not in tried_names]
        tried = history.tried()
        for name in names:
            result = tweaks.apply_tweak(name, base["source"], base["params"])
            if result is None:
                continue
            candidate = Candidate(
                result.source, result.params, name, result.description,
                [*base["tweaks"], result.description], base["n"],
            )
            if candidate.key not in tried:
                return candidate
        return None

    @staticmethod
    def _improving_tweak(history: History) -> str | None:
        """The last attempt's tweak, when it beat its parent (so it is worth applying again)."""
        last = history.attempts[-1]
        if not last["tweak_name"] or not scored(last):
            return None
        parent = next((a for a in history.attempts if a["n"] == last["parent"]), None)
        if parent is None or not usable(parent["metric_value"]):
            return None
        if history.objective.better_than(last["metric_value"], parent["metric_value"]):
            return last["tweak_name"]
        return None


class DiagnoseStrategy:
    """Read what went wrong in the best attempts' curves and logs and make the move that fixes
    it (jobs.tune.diagnosis); repeat moves that helped, judged against the evaluation's noise; then
    every other tweak, from every attempt, before saying that nothing is left."""

    name = "diagnose"

    def next_candidate(self, history: History) -> Candidate | None:
        tolerance = diagnosis.noise(history.attempts, history.metric, history.min_delta)
        by_n = {a["n"]: a for a in history.attempts}
        verdicts = {
            a["n"]: diagnosis.judge(a, by_n[a["parent"]], history.objective, tolerance)
            for a in history.attempts if a["tweak_name"] and a["parent"] in by_n
        }
        helped = self._helped_moves(history, verdicts, by_n)
        tried = history.tried()
        for base in self._bases(history, verdicts, tolerance):
            found = diagnosis.diagnose(base, history.metric, history.mode, history.kind, history.threshold)
            moves = dict.fromkeys([*found.moves, *helped, *diagnosis.moves_for(history.kind, history.framework)])
            for name in moves:
                result = tweaks.apply_tweak(name, base["source"], base["params"])
                if result is None:
                    continue
                if name in found.moves:
                    why = f"{found.problem}: {found.evidence}"
                elif name in helped:
                    why = f"{helped[name]}: again"
                elif found.moves:
                    why = f"{found.problem}, its moves tried: next untried move"
                else:
                    why = f"{found.evidence}: next untried move"
                candidate = Candidate(
                    result.source, result.params, name, result.description,
                    [*base["tweaks"], result.description], base["n"], f"attempt {base['n']}: {why}",
                )
                if candidate.key not in tried:
                    return candidate
        return None

    @staticmethod
    def _helped_moves(history: History, verdicts: dict[int, str], by_n: dict[int, dict]) -> dict[str, str]:
        """Moves that helped, the one that helped most first: name -> the evidence in words."""
        gains: dict[str, tuple[float, str]] = {}
        for a in history.attempts:
            if verdicts.get(a["n"]) != "helped":
                continue
            parent = by_n[a["parent"]]
            gain = history.objective.improvement(a["metric_value"] or 0.0, parent["metric_value"] or 0.0)
            words = (f"{tweaks.label(a['tweak_name'])} helped at attempt {a['n']} "
                     f"({parent['metric_value'] or 0:.4g} → {a['metric_value']:.4g})")
            if a["tweak_name"] not in gains or gain > gains[a["tweak_name"]][0]:
                gains[a["tweak_name"]] = (gain, words)
        ranked = sorted(gains.items(), key=lambda item: -item[1][0])
        return {name: words for name, (_, words) in ranked}

    @staticmethod
    def _bases(history: History, verdicts: dict[int, str], tolerance: float) -> list[dict]:
        """Attempts to build on, in order: the best (or, within noise of it, the latest attempt
        whose move helped), the other succeeded attempts best first, then the failed ones."""
        succeeded = history.succeeded()
        objective = history.objective
        ranked = objective.ranked(succeeded)  # best first, equals in attempt order
        last = history.attempts[-1]
        if (ranked and verdicts.get(last["n"]) == "helped" and last in ranked
                and objective.improvement(ranked[0]["metric_value"], last["metric_value"]) <= tolerance):
            ranked.remove(last)
            ranked.insert(0, last)
        failed = [a for a in reversed(history.attempts) if a not in succeeded]
        return ranked + failed


def _space_points(space: dict[str, list]) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(space[k] for k in keys))]


def _describe(point: dict) -> str:
    return "set " + ", ".join(f"{k}={v}" for k, v in point.items()) + " (parameter)"


class GridStrategy:
    """Every combination of the search space, in order, as parameters of the pushed file."""

    name = "grid"

    def next_candidate(self, history: History) -> Candidate | None:
        tried = history.tried()
        for point in _space_points(history.space or {}):
            params = {**history.base_params, **point}
            candidate = Candidate(history.pushed_source, params, "grid", _describe(point), [_describe(point)], None)
            if candidate.key not in tried:
                return candidate
        return None


class OptunaStrategy:
    """Optuna's TPE sampler over the search space, replayed from the store's history each time
    with a fixed seed, so the next suggestion is reproducible (a Jenkins step in a fresh process
    decides as `pushtune run` does).

    The space is `--space` (categorical, every value listed), or else one derived from the
    defaults the script declares with `kit.params` (see SEARCH_RULES)."""

    name = "optuna"

    def __init__(self, seed: int = 0, max_asks: int = 50):
        if importlib.util.find_spec("optuna") is None:  # said before a run starts, not after attempt 1
            raise UserError("--strategy optuna: optuna is not installed: pip install 'pushtune[optuna]' "
                            "(or make install)")
        self.seed, self.max_asks = seed, max_asks

    def next_candidate(self, history: History) -> Candidate | None:
        if history.space:
            return self._from_listed_space(history)
        return self._from_declared_defaults(history)

    def _study(self, history: History, distributions: dict, **sampler_options):
        """A fresh study holding every succeeded attempt whose params lie in the space."""
        # heavy optional library (optuna extra): only for --strategy optuna
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction: Literal["maximize", "minimize"] = "maximize" if history.mode == "max" else "minimize"
        sampler = optuna.samplers.TPESampler(seed=self.seed, **sampler_options)
        study = optuna.create_study(direction=direction, sampler=sampler)
        for attempt in history.succeeded():
            point = {k: attempt["params"].get(k) for k in distributions}
            if all(_within(distributions[k], v) for k, v in point.items()):
                study.add_trial(optuna.trial.create_trial(
                    params=point, distributions=distributions, value=attempt["metric_value"]))
        return study

    def _from_listed_space(self, history: History) -> Candidate | None:
        # heavy optional library (optuna extra): only for --strategy optuna
        import optuna

        space = history.space or {}
        distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in space.items()}
        study = self._study(history, distributions)
        tried = history.tried()
        untried = [p for p in _space_points(space)
                   if config_key(history.pushed_source, {**history.base_params, **p}) not in tried]
        if not untried:
            return None
        for _ in range(self.max_asks):
            point = study.ask(distributions).params
            if point in untried:
                break
        else:  # the sampler keeps proposing what was tried: take the next untried point
            point = untried[0]
        params = {**history.base_params, **point}
        return Candidate(history.pushed_source, params, "optuna", _describe(point), [_describe(point)], None)

    def _from_declared_defaults(self, history: History) -> Candidate | None:
        distributions = derived_space(history.pushed_source, history.base_params)
        if not distributions:
            return None
        # a few attempts is the usual budget: let TPE model the results after three of them
        study = self._study(history, distributions, n_startup_trials=_STARTUP_TRIALS)
        tried = history.tried()
        for _ in range(self.max_asks):
            trial = study.ask(distributions)
            point = {k: _readable(distributions[k], v) for k, v in trial.params.items()}
            params = {**history.base_params, **point}
            if config_key(history.pushed_source, params) not in tried:
                changed = {k: v for k, v in point.items() if v != history.base_params.get(k)}
                text = _describe_readably(changed)
                return Candidate(history.pushed_source, params, "optuna", text, [text], None)
        return None  # the sampler keeps proposing what was tried: the space is spent for it


_STARTUP_TRIALS = 3

# How `--strategy optuna` searches a parameter declared with kit.params(name=d) when no --space
# is given: parameter name (lower case) -> (scale, bounds from the declared default d). The
# bounds are widened to take in d; an int default is searched as ints (kit.params casts to it);
# "log" needs d > 0. Other declared parameters keep their declared values.
SEARCH_RULES: dict[str, tuple[str, Callable[[Any], tuple[float, float]]]] = {
    **dict.fromkeys(
        ("learning_rate", "lr", "c", "alpha", "l1", "l2", "weight_decay", "reg_alpha", "reg_lambda"),
        ("log", lambda d: (d / 100, d * 100)),
    ),
    "epochs": ("log", lambda d: (max(1, d // 2), d * 16)),
    "batch_size": ("powers of two", lambda d: (8, max(d, 512))),
    **dict.fromkeys(("dense_width", "units"), ("log", lambda d: (max(2, d // 4), max(d * 8, 64)))),
    "dense_layers": ("linear", lambda d: (0, max(d + 2, 3))),
    "dropout": ("linear", lambda d: (0.0, 0.6)),
    "max_iter": ("log", lambda d: (d, d * 100)),
}


def _distribution(name: str, default: Any):
    """The Optuna distribution SEARCH_RULES gives `name` around `default`, or None."""
    # heavy optional library (optuna extra): only for --strategy optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    rule = SEARCH_RULES.get(name.lower())
    if rule is None or not isinstance(default, (int, float)) or isinstance(default, bool):
        return None
    if not math.isfinite(default):
        return None
    scale, bounds = rule
    if scale != "linear" and default <= 0:
        return None
    low, high = bounds(default)
    low, high = min(low, default), max(high, default)
    if scale == "powers of two":
        if not isinstance(default, int):
            return None
        choices = {2 ** k for k in range(int(high).bit_length()) if low <= 2 ** k <= high}
        return CategoricalDistribution(sorted(choices | {default}))
    if isinstance(default, int):
        low, high = max(math.ceil(low), 1) if scale == "log" else math.ceil(low), math.floor(high)
        return IntDistribution(low, high, log=scale == "log") if low < high else None
    low, high = float(f"{low:.10g}"), float(f"{high:.10g}")
    return FloatDistribution(low, high, log=scale == "log") if low < high else None


def derived_space(source: str, base_params: dict) -> dict:
    """The Optuna space of the parameters the script declares with kit.params that SEARCH_RULES
    knows, around their values in `base_params` (the declared defaults, or --param values)."""
    declared = {name.lower() for name in tweaks.declared_params(source)}
    space = {}
    for name, value in base_params.items():
        if name.lower() in declared and (distribution := _distribution(name, value)) is not None:
            space[name] = distribution
    return space


def _within(distribution, value: Any) -> bool:
    """Whether `value` is a point of the Optuna distribution (so a trial can hold it)."""
    # heavy optional library (optuna extra): only for --strategy optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    if isinstance(distribution, IntDistribution) and not isinstance(value, int):
        return False
    return distribution.low <= value <= distribution.high


def _readable(distribution, value: Any) -> Any:
    """A sampled float to 4 significant digits (kept inside the distribution); others as they are."""
    if not isinstance(value, float) or not hasattr(distribution, "low"):
        return value
    return min(max(float(f"{value:.4g}"), distribution.low), distribution.high)


def _describe_readably(point: dict) -> str:
    values = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())
    return "set " + ", ".join(values) + " (parameter)"


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "diagnose": DiagnoseStrategy, "ladder": LadderStrategy, "grid": GridStrategy, "optuna": OptunaStrategy,
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise UserError(f"unknown strategy {name!r} (choose {', '.join(STRATEGIES)})") from None


def load_space(text: str, origin: str) -> dict[str, list]:
    """A search space: a JSON object of non-empty lists of values per key."""
    try:
        space = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{origin}: not valid JSON: {exc}") from None
    if not isinstance(space, dict) or not space:
        raise UserError(f"{origin}: must be a JSON object of lists, e.g. {{\"LEARNING_RATE\": [0.001, 0.002]}}")
    for key, values in space.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{origin}: {key!r} must be a non-empty list of values")
        if any(isinstance(v, (dict, list)) for v in values):
            raise UserError(f"{origin}: values of {key!r} must be numbers, strings, booleans or null")
    return space
