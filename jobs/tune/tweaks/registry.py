"""The tweak registry: one record per tweak, the ladders derived from it, and applying a tweak.

A record names the (kind, framework) profiles the tweak applies to, its source rewrite for each
framework, its parameter form (for scripts that read PUSHTUNE_PARAMS) and its rung in each
framework's ladder. Adding a tweak is adding a record here (and its rewrite in the framework's
module); tests/test_tweaks.py checks the records against each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.classify.classifier import framework_of_module
from jobs.tune.tweaks import keras, pytorch, sklearn
from jobs.tune.tweaks.numeric import Change, add_one_layer, at_most_32, halve_count, raise_dropout, scale
from jobs.tune.tweaks.params import ParamForm, change_params, reads_params
from jobs.tune.tweaks.source import CannotRewrite, Source, SourceTweak

Profile = tuple[str, str]  # (kind, framework), as jobs.classify.classifier names them

KERAS: tuple[Profile, ...] = (("cnn", "keras"), ("ann", "keras"))
PYTORCH: tuple[Profile, ...] = (("cnn", "pytorch"), ("ann", "pytorch"))
SKLEARN: tuple[Profile, ...] = (("regression", "sklearn"),)
PROFILES: tuple[Profile, ...] = KERAS + PYTORCH + SKLEARN


@dataclass(frozen=True)
class TweakResult:
    source: str  # the new source (unchanged in parameter mode)
    params: dict  # the new params (unchanged in source mode)
    description: str  # one line: what changed and where
    old: Any = None  # the first changed value, before (a number, or an optimizer's name)
    new: Any = None  # … and after
    sites: int = 0  # double_epochs: how many places were changed


@dataclass(frozen=True)
class Tweak:
    name: str
    description: str  # what it does, for people
    profiles: tuple[Profile, ...]  # where it applies
    rewrites: Mapping[str, SourceTweak]  # framework -> source rewrite
    param: ParamForm | None = None  # the change it makes instead when the script reads PUSHTUNE_PARAMS
    ladder: Mapping[str, int] = field(default_factory=dict)  # framework -> rung (1 is tried first)
    counts_sites: bool = False  # fill TweakResult.sites
    label: str = ""  # the move in a few words, as the "why" of an attempt names it: "C ×10", "epochs ×2"


def _learning_rate(name: str, factor: float, header: str, label: str, ladder: dict[str, int] | None = None) -> Tweak:
    return Tweak(
        name, f"{header} (optimizer arguments, LR constants; a default rate written out)", KERAS + PYTORCH,
        {"keras": lambda src: keras.change_learning_rate(src, factor, header),
         "pytorch": lambda src: pytorch.change_learning_rate(src, factor, header)},
        param=ParamForm(("learning_rate", "lr"), scale(factor)), ladder=ladder or {}, label=label)


def _batch_size(name: str, change: Change, header: str, label: str, ladder: dict[str, int] | None = None) -> Tweak:
    return Tweak(name, f"{header} of training (not inference) calls", KERAS,
                 {"keras": lambda src: keras.change_batch_size(src, change, header)},
                 param=ParamForm(("batch_size",), change), ladder=ladder or {}, label=label)


def _estimator(name: str, keyword: str, defaults: dict, change: Change, header: str,
               ladder: dict[str, int] | None = None) -> Tweak:
    return Tweak(name, f"{header} every estimator's {keyword} (its default written out when unset)", SKLEARN,
                 {"sklearn": lambda src: sklearn.estimator_keyword(src, keyword, defaults, change, header)},
                 param=ParamForm((keyword.lower(),), change), ladder=ladder or {}, label=header.rstrip(":"))


def _optimizer_named(target: str) -> Change:
    """The parameter change to optimizer `target` from the other of SGD and Adam, in the value's
    own spelling (`sgd` -> `adam`, `SGD` -> `Adam`)."""
    sources = ("sgd",) if target == "Adam" else ("adam", "adamw")

    def change(value: Any) -> str | None:
        if not isinstance(value, str) or value.lower() not in sources:
            return None
        return target.lower() if value == value.lower() else target

    return change


def _by_name(*tweaks: Tweak) -> dict[str, Tweak]:
    names = [tweak.name for tweak in tweaks]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"tweaks registered twice: {', '.join(twice)}")
    return {tweak.name: tweak for tweak in tweaks}


# A tweak without a rung on a framework's ladder is still tried there by the diagnose strategy.
TWEAKS: dict[str, Tweak] = _by_name(
    Tweak("add_dense", "add a hidden layer before the output layer (Keras: Dense; PyTorch: Linear + ReLU)",
          KERAS + PYTORCH, {"keras": keras.add_dense, "pytorch": pytorch.add_linear},
          param=ParamForm(("dense_layers",), add_one_layer), ladder={"keras": 1, "pytorch": 4},
          label="a hidden layer more"),
    Tweak("widen_dense", "double the narrowest hidden Dense or Linear layer (the next layer follows)",
          KERAS + PYTORCH, {"keras": keras.widen_dense, "pytorch": pytorch.widen_linear},
          param=ParamForm(("dense_width",), scale(2, integer=True)), ladder={"pytorch": 5},
          label="narrowest layer ×2 wide"),
    Tweak("add_dropout", "add Dropout(0.3) before the output layer", KERAS,
          {"keras": keras.add_dropout}, param=ParamForm(("dropout",), raise_dropout), label="dropout added"),
    Tweak("double_epochs", "double the epoch count (epochs=, EPOCHS constants, an epoch loop's range)",
          KERAS + PYTORCH, {"keras": keras.double_epochs, "pytorch": pytorch.double_epochs},
          param=ParamForm(("epochs",), scale(2, integer=True)), ladder={"keras": 2, "pytorch": 1},
          counts_sites=True, label="epochs ×2"),
    _learning_rate("halve_learning_rate", 0.5, "halve learning rate", "learning rate ÷2", {"keras": 3}),
    _learning_rate("double_learning_rate", 2, "double learning rate", "learning rate ×2", {"keras": 4}),
    _learning_rate("divide_learning_rate_by_10", 0.1, "divide learning rate by 10", "learning rate ÷10",
                   {"pytorch": 7}),
    _learning_rate("multiply_learning_rate_by_10", 10, "multiply learning rate by 10", "learning rate ×10",
                   {"pytorch": 3}),
    _batch_size("halve_batch_size", halve_count, "halve batch size", "batch size ÷2", {"keras": 5}),
    _batch_size("batch_size_32", at_most_32, "set batch size", "batch size 32 at most"),
    # two one-way switches, not a toggle: a strategy repeats a move that helped
    Tweak("use_adam", f"switch torch.optim.SGD to Adam (lr {pytorch.SWITCH_RATES['Adam']})", PYTORCH,
          {"pytorch": lambda src: pytorch.switch_optimizer(src, ("SGD",), "Adam")},
          param=ParamForm(("optimizer",), _optimizer_named("Adam"),
                          also={("learning_rate", "lr"): pytorch.SWITCH_RATES["Adam"]}),
          ladder={"pytorch": 2}, label="SGD → Adam"),
    Tweak("use_sgd", f"switch torch.optim.Adam or AdamW to SGD (lr {pytorch.SWITCH_RATES['SGD']}, "
                     f"momentum {pytorch.SGD_MOMENTUM})", PYTORCH,
          {"pytorch": lambda src: pytorch.switch_optimizer(src, ("Adam", "AdamW"), "SGD")},
          param=ParamForm(("optimizer",), _optimizer_named("SGD"),
                          also={("learning_rate", "lr"): pytorch.SWITCH_RATES["SGD"],
                                ("momentum",): pytorch.SGD_MOMENTUM}),
          ladder={"pytorch": 6}, label="Adam → SGD"),
    _estimator("c_times_10", "C", sklearn.C_DEFAULTS, scale(10), "C ×10:", {"sklearn": 1}),
    _estimator("c_div_10", "C", sklearn.C_DEFAULTS, scale(0.1), "C ÷10:"),
    _estimator("alpha_div_10", "alpha", sklearn.ALPHA_DEFAULTS, scale(0.1), "alpha ÷10:", {"sklearn": 2}),
    _estimator("alpha_times_10", "alpha", sklearn.ALPHA_DEFAULTS, scale(10), "alpha ×10:"),
    _estimator("double_max_iter", "max_iter", sklearn.MAX_ITER_DEFAULTS, scale(2, integer=True), "max_iter ×2:",
               {"sklearn": 3}),
    _estimator("max_iter_times_10", "max_iter", sklearn.MAX_ITER_DEFAULTS, scale(10, integer=True),
               "max_iter ×10:"),
)
TWEAK_NAMES: tuple[str, ...] = tuple(TWEAKS)


def label(name: str) -> str:
    """The tweak's few words ("C ×10"), for people; its name when it is not (or no longer) known."""
    tweak = TWEAKS.get(name)
    return tweak.label if tweak and tweak.label else name


def ladder(kind: str, framework: str) -> tuple[str, ...]:
    """The tweaks the ladder strategy tries for a profile, in order."""
    rungs = sorted((tweak.ladder[framework], tweak.name) for tweak in TWEAKS.values()
                   if (kind, framework) in tweak.profiles and framework in tweak.ladder)
    return tuple(name for _, name in rungs)


PROFILE_LADDERS: dict[Profile, tuple[str, ...]] = {profile: ladder(*profile) for profile in PROFILES}
# By kind alone, for callers that do not know the framework (strategies.LadderStrategy): the
# framework each kind had before PyTorch.
LADDERS: dict[str, tuple[str, ...]] = {
    "cnn": ladder("cnn", "keras"), "ann": ladder("ann", "keras"), "regression": ladder("regression", "sklearn"),
}


def ladder_of(kind: str, framework: str | None) -> tuple[str, ...]:
    """The ladder strategy's tweaks for a run, in order: its (kind, framework) profile's own
    ladder, else the kind's (for a framework no tweak has a rung for)."""
    return PROFILE_LADDERS.get((kind, framework or "")) or LADDERS.get(kind, ())


def _rewrite_for(tweak: Tweak, src: Source) -> SourceTweak | None:
    """A file that imports torch gets the PyTorch rewrite; any other gets the Keras or
    scikit-learn one (which look for their own calls, so they also take snippets without imports)."""
    if any(framework_of_module(module or name) == "pytorch" for module, name, _ in src.imports()):
        return tweak.rewrites.get("pytorch")
    return tweak.rewrites.get("keras") or tweak.rewrites.get("sklearn")


def apply_tweak(name: str, source: str, params: dict) -> TweakResult | None:
    """Apply tweak `name`: to the parameters when the script reads PUSHTUNE_PARAMS (working on
    its declared defaults overlaid with `params`), else to its source. None when it does not
    apply, also when the source is too deeply nested to rewrite. A source that does not parse
    is a UserError; an unknown name is a programming error: ValueError."""
    tweak = TWEAKS.get(name)
    if tweak is None:
        raise ValueError(f"unknown tweak {name!r} (known: {', '.join(TWEAK_NAMES)})")
    try:
        if reads_params(source):
            if tweak.param is None or (changed := change_params(tweak.param, source, params)) is None:
                return None
            return TweakResult(source, changed.params, changed.description, changed.old, changed.new,
                               int(tweak.counts_sites))
        src = Source(source)
        rewrite = _rewrite_for(tweak, src)
        result = rewrite(src) if rewrite else None
    except (CannotRewrite, RecursionError):  # too deeply nested to analyse or rewrite: skipped
        return None
    if result is None:
        return None
    old, new = (result.done[0].old, result.done[0].new) if result.done else (None, None)
    sites = len(result.done) if tweak.counts_sites else 0
    return TweakResult(result.source, dict(params), result.description, old, new, sites)
