"""Numbers in tweaks: how a changed value is written back, and the changes themselves.

A `Change` takes the current value (a literal from the source, or a parameter of any JSON
type) and returns the new one, or None when it does not apply to that value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Change = Callable[[Any], Any]  # new value, or None when it does not apply


def format_number(value: int | float) -> str:
    """A readable literal: ints as is, floats to 10 significant digits (0.0005, not 0.00050000001)."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.10g}"
    return text if any(c in text for c in ".e") else f"{text}.0"


def format_value(value: Any) -> str:
    """A number as format_number writes it; anything else (an optimizer name) as text."""
    return format_number(value) if is_number(value) else str(value)


def tidy(value: int | float) -> int | float:
    """`value` without float noise (what format_number writes, read back)."""
    return value if isinstance(value, int) else float(format_number(value))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: int | float) -> bool:
    """Within float range and not inf or nan: a value a literal can be written back as, and a
    script can compute with (1e308 ×10 is not; neither is a 400-digit integer)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def scale(factor: float, integer: bool = False) -> Change:
    def change(value: Any) -> int | float | None:
        if not is_number(value) or not finite(value) or value <= 0 or (integer and not isinstance(value, int)):
            return None
        new = value * factor
        if not finite(new):  # beyond float range: the change does not apply
            return None
        new = tidy(new)
        return int(new) if integer else new

    return change


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def halve_count(value: Any) -> int | None:
    return value // 2 if _count(value) and value > 1 else None


def add_one_layer(value: Any) -> int | None:
    return value + 1 if _count(value) and 0 <= value < 2**53 else None


def at_most_32(value: Any) -> int | None:
    return 32 if _count(value) and value > 32 else None


def raise_dropout(value: Any) -> float | None:
    """0 -> 0.2, then steps of 0.1 up to 0.5."""
    if not is_number(value) or not 0 <= value < 0.5:
        return None
    new = 0.2 if value == 0 else tidy(value + 0.1)
    return new if new <= 0.5 else None
