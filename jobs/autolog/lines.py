"""Metrics a script printed in its own words: `Test accuracy: 0.9667`, `Accuracy = 97.8%`,
`val_acc 0.91`, `test loss: 0.31, test accuracy: 0.93`.

A line is read as one or more `label [:|=|is] number[%]` pairs (separated by `,`, `;`, `|` or
` - `); anything else on it makes it no metric line. Keras progress bars (`━`, `/step`) are
skipped: they show training figures, not the script's verdict. `matches(label, metric)` says
whether a label names a metric: qualifiers such as "test", "final" or "val" are ignored, `acc`
is `accuracy`, and "train"/"training" labels count only when nothing else names the metric.
Standard library only: this runs inside the attempt too.
"""

from __future__ import annotations

import math
import re

_PAIR = re.compile(
    r"^\s*(?P<label>[A-Za-z][\w .()/^²-]*?)\s*(?::|=|\bis\b|\s)\s*"
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<percent>%)?\s*\.?\s*$"
)
_SEPARATORS = re.compile(r"\s*(?:,|;|\|| - )\s*")
_PROGRESS_MARKS = ("━", "/step", "ETA:", "it/s]", "s/it]")
QUALIFIERS = frozenset({"test", "testing", "val", "valid", "validation", "final", "eval", "evaluation",
                        "holdout", "hold", "out", "overall", "mean", "average", "avg", "model", "set",
                        "score", "the", "on", "of", "data", "dataset", "best", "top", "1", "top1"})
TRAINING = frozenset({"train", "training"})
ALIASES = {"acc": "accuracy", "r2": "r2", "r²": "r2", "r^2": "r2", "rsquared": "r2",
           "f1": "f1", "auc": "auc", "rocauc": "roc_auc", "roc_auc": "roc_auc",
           "meansquarederror": "mse", "meanabsoluteerror": "mae", "rootmeansquarederror": "rmse",
           "logloss": "log_loss", "crossentropy": "loss"}
MAX_LINE = 400  # longer lines are output dumps, not a metric someone printed


def pairs(line: str) -> list[tuple[str, float]]:
    """The (label, value) pairs of a metric line; [] when the line is not one. A percentage is
    returned as a fraction (97.8% → 0.978)."""
    if len(line) > MAX_LINE or any(mark in line for mark in _PROGRESS_MARKS):
        return []
    found = []
    for part in _SEPARATORS.split(line.strip()):
        match = _PAIR.match(part)
        if not match:
            return []
        value = float(match.group("number"))
        if match.group("percent"):
            value /= 100
        if math.isfinite(value):
            found.append((match.group("label").strip(), value))
    return found


def _words(label: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9²^]+", label.lower()) if word]


def canonical(label: str) -> tuple[str, bool]:
    """(what the label measures, whether it is about the training data)."""
    words = _words(label)
    training = any(word in TRAINING for word in words)
    named = [word for word in words if word not in TRAINING and (word == "mean" or word not in QUALIFIERS)]
    if "".join(named) in ALIASES:  # "mean squared error": the "mean" is part of the name
        return ALIASES["".join(named)], training
    kept = [word for word in named if word not in QUALIFIERS]
    return ALIASES.get("".join(kept), "_".join(kept)), training


def matches(label: str, metric: str) -> bool:
    """Whether `label` (as printed) names `metric` (as the run gates on it)."""
    wanted, _ = canonical(metric)
    return bool(wanted) and canonical(label)[0] == wanted


def last_printed(lines: list[tuple[str, float, int | None]], metric: str) -> tuple[str, float, int | None] | None:
    """Of (label, value, line number) pairs in print order, the one that reports `metric`: the
    last not about the training data, else the last about it."""
    named = [entry for entry in lines if matches(entry[0], metric)]
    held_out = [entry for entry in named if not canonical(entry[0])[1]]
    chosen = held_out or named
    return chosen[-1] if chosen else None
