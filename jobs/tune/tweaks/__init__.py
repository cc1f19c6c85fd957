"""Model tweaks: small changes that may lift a model's metric, tried when it is below threshold.

A tweak rewrites the model's source with libcst, so formatting and comments survive, and says
in one line what it changed. When it finds nothing it can change, it returns None (skipped);
it never pretends. A script that reads PUSHTUNE_PARAMS (through `jobs.kit.params(**defaults)`)
gets its tweaks as parameter changes instead: its source is left alone.

One module per family, as Jenkins Job Builder keeps one per component family:
- source, layout, numeric: the libcst machinery (parsing, edits, layout-keeping insertions, numbers)
- params: reading a script's PUSHTUNE_PARAMS use and applying a tweak's parameter form
- keras, sklearn, pytorch: the source rewrites of each framework
- registry: one record per tweak, the ladders derived from the records, `apply_tweak`
"""

from jobs.tune.tweaks.keras import DEFAULT_DENSE_WIDTH, OPTIMIZER_DEFAULTS
from jobs.tune.tweaks.numeric import format_number
from jobs.tune.tweaks.params import ParamForm, declared_params, reads_params
from jobs.tune.tweaks.registry import (
    LADDERS,
    PROFILE_LADDERS,
    PROFILES,
    TWEAK_NAMES,
    TWEAKS,
    Profile,
    Tweak,
    TweakResult,
    apply_tweak,
    label,
    ladder,
    ladder_of,
)
from jobs.tune.tweaks.sklearn import ALPHA_DEFAULTS, C_DEFAULTS, MAX_ITER_DEFAULTS
from jobs.tune.tweaks.source import MAX_DEPTH, CannotRewrite

__all__ = [
    "ALPHA_DEFAULTS", "C_DEFAULTS", "DEFAULT_DENSE_WIDTH", "LADDERS", "MAX_DEPTH", "MAX_ITER_DEFAULTS",
    "OPTIMIZER_DEFAULTS", "PROFILES", "PROFILE_LADDERS", "TWEAKS", "TWEAK_NAMES", "CannotRewrite", "ParamForm",
    "Profile", "Tweak", "TweakResult", "apply_tweak", "declared_params", "format_number", "label", "ladder",
    "ladder_of", "reads_params",
]
