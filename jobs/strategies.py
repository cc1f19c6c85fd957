"""Tuning strategies behind one interface: given the run's history, what to try next.

Strategies keep no state of their own: everything they decide follows from the attempts in the
store, so a Jenkins job that runs one step at a time and `pushtune run` decide alike.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Protocol

from jobs import tweaks
from jobs.errors import UserError
from jobs.metrics import best_attempt, is_better


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
    attempts: list[dict]  # store rows plus "source"
    space: dict[str, list] | None = None

    def tried(self) -> set[str]:
        return {a["config_key"] for a in self.attempts}

    def succeeded(self) -> list[dict]:
        return [a for a in self.attempts if a["status"] == "ok" and a["metric_value"] is not None]

    def best(self) -> dict | None:
        return best_attempt(self.attempts, self.mode)


class Strategy(Protocol):
    """Decides attempt 2 onwards (attempt 1 always runs the file as pushed)."""

    name: str

    def next_candidate(self, history: History) -> Candidate | None: ...


def first_candidate(history: History) -> Candidate:
    """Attempt 1 runs the file as pushed."""
    return Candidate(history.pushed_source, dict(history.base_params))


class LadderStrategy:
    """Start from the best attempt so far and apply the next untried tweak of the kind's ladder;
    a tweak that improved the metric is applied again before moving on."""

    name = "ladder"

    def next_candidate(self, history: History) -> Candidate | None:
        base = history.best() or history.attempts[0]
        order = list(tweaks.LADDERS.get(history.kind, ()))
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
        if not last["tweak_name"] or last["status"] != "ok" or last["metric_value"] is None:
            return None
        parent = next((a for a in history.attempts if a["n"] == last["parent"]), None)
        if parent is None or parent["metric_value"] is None:
            return None
        if is_better(last["metric_value"], parent["metric_value"], history.mode):
            return last["tweak_name"]
        return None


def _space_points(space: dict[str, list]) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


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
    """Optuna's TPE sampler over the (categorical) search space, replayed from the store's
    history each time with a fixed seed, so the next suggestion is reproducible."""

    name = "optuna"

    def __init__(self, seed: int = 0, max_asks: int = 50):
        self.seed, self.max_asks = seed, max_asks

    def next_candidate(self, history: History) -> Candidate | None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = history.space or {}
        distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in space.items()}
        direction = "maximize" if history.mode == "max" else "minimize"
        study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=self.seed))
        for attempt in history.succeeded():
            point = {k: attempt["params"].get(k) for k in space}
            if all(point[k] in space[k] for k in space):
                study.add_trial(optuna.trial.create_trial(
                    params=point, distributions=distributions, value=attempt["metric_value"]))
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


STRATEGIES = {"ladder": LadderStrategy, "grid": GridStrategy, "optuna": OptunaStrategy}


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
