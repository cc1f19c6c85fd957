"""PyTorch tweaks: the epoch loop, the optimizer and its learning rate, and the Linear layers of
an `nn.Sequential`.

Names are resolved through the file's imports (`nn.Linear` after `from torch import nn`, `SGD`
after `from torch.optim import SGD`); a call that does not resolve to torch is left alone.
Where a file holds several candidates the rules are the Keras ones:
- `add_linear` acts on the Linear layer that comes last in the file among the direct layers of
  an `nn.Sequential(...)`: the output layer of the model defined last. (Linear layers kept as
  module attributes and called in `forward` are not rewritten: their order is not in the list.)
- `widen_linear` acts on the narrowest hidden Linear layer (not the last of its Sequential).
- the other tweaks change every site they recognise (every epoch count, every optimizer).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import partial

import libcst as cst

from jobs.tune.tweaks.layout import add_import_name, insert_args, with_keyword, without_args
from jobs.tune.tweaks.numeric import format_number, scale
from jobs.tune.tweaks.source import (
    Done,
    Edit,
    Rewrite,
    Site,
    Source,
    callee,
    dotted,
    keyword,
    number_node,
    positional,
    replace_with,
    rewritten,
)

DEFAULT_LINEAR_WIDTH = 128

# torch.optim classes and their default learning rates (torch 2.x).
OPTIMIZER_DEFAULTS: dict[str, float] = {
    "SGD": 0.001, "Adam": 0.001, "AdamW": 0.001, "RMSprop": 0.01, "Adagrad": 0.01,
    "Adadelta": 1.0, "Adamax": 0.002, "NAdam": 0.002, "RAdam": 0.001,
}

# The keywords each optimizer a switch can produce accepts; others are dropped by the switch.
_OPTIMIZER_KEYWORDS = {
    "SGD": {"params", "lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize",
            "foreach", "differentiable", "fused"},
    "Adam": {"params", "lr", "betas", "eps", "weight_decay", "amsgrad", "foreach", "maximize",
             "capturable", "differentiable", "fused", "decoupled_weight_decay"},
}
SWITCH_RATES = {"Adam": 0.001, "SGD": 0.01}  # the rate an optimizer switched to starts with
SGD_MOMENTUM = 0.9

# Layers that keep the number of features, so a Linear layer after them sees the width before.
_WIDTH_KEEPING = frozenset({
    "ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Mish", "ELU", "SELU", "CELU", "Tanh", "Sigmoid",
    "Softplus", "Hardswish", "Hardtanh", "Dropout", "AlphaDropout", "Identity",
})
_NORMS = {"BatchNorm1d": "num_features", "LayerNorm": "normalized_shape"}  # their width argument


# --- names ------------------------------------------------------------------------------------


def _bindings(src: Source) -> dict[str, str]:
    """Bound name -> what it stands for: `nn` -> `torch.nn`, `SGD` -> `torch.optim.SGD`."""
    bound: dict[str, str] = {}
    for module, name, alias in src.imports():
        if module:
            bound[alias] = f"{module}.{name}"
        elif alias == name:  # `import torch.nn` binds `torch`
            head = name.split(".")[0]
            bound[head] = head
        else:
            bound[alias] = name
    return bound


def _resolve(bindings: dict[str, str], node: cst.CSTNode) -> str:
    """The full name `node` stands for through the imports; "" when it is not imported."""
    head, _, rest = (dotted(node) or "").partition(".")
    if head not in bindings:
        return ""
    return f"{bindings[head]}.{rest}" if rest else bindings[head]


def _torch_calls(src: Source, module: str, names: Collection[str]) -> list[tuple[cst.Call, str]]:
    """Calls of `module.<name>` for the given names, with the name, in source order."""
    bindings = _bindings(src)
    found = []
    for call in src.calls:
        prefix, _, name = _resolve(bindings, call.func).rpartition(".")
        if prefix == module and name in names:
            found.append((call, name))
    return found


def _from_import(src: Source, bound: str | None) -> tuple[cst.ImportFrom, int] | None:
    """The `from … import` statement that binds `bound`, and the position of its alias."""
    for node in src.nodes:
        if (isinstance(node, cst.ImportFrom) and not node.relative and node.module is not None
                and not isinstance(node.names, cst.ImportStar)):
            for index, alias in enumerate(node.names):
                if (alias.evaluated_alias or alias.evaluated_name) == bound:
                    return node, index
    return None


def _sibling(src: Source, func: cst.BaseExpression, name: str) -> tuple[cst.BaseExpression, dict[int, Edit]] | None:
    """How to spell class `name` of the module `func` comes from (`nn.Linear` -> `nn.ReLU`), and
    the edit that imports it beside `func` when that is a bare imported name (`Linear`); None
    when `name` may already mean something else in the file."""
    if isinstance(func, cst.Attribute):
        return func.with_changes(attr=cst.Name(name)), {}
    found = _from_import(src, dotted(func))
    if found is None:
        return None
    statement, index = found
    module = statement.module and dotted(statement.module)
    bound = next((alias for m, imported, alias in src.imports() if m == module and imported == name), None)
    if bound is not None:
        return cst.Name(bound), {}
    if src.uses(name):
        return None
    return cst.Name(name), {id(statement): lambda updated: add_import_name(updated, index, name)}


# --- epochs -----------------------------------------------------------------------------------


def _before_plus_one(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """N in `N + 1`."""
    if (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add)
            and isinstance(node.right, cst.Integer) and node.right.evaluated_value == 1):
        return node.left
    return None


def _epoch_range_sites(src: Source) -> list[Site]:
    """The epoch count of `for epoch in range(N)`, also `range(0, N)`, `range(1, N + 1)` and
    `range(start, N)` with a computed start (a resumed training's): the loop variable must name
    an epoch, and N is a literal or a constant used only there (EPOCHS-like constants are
    doubled wherever they are used). `range(1, 6)` is left alone: doubling its stop would not
    double the epochs."""
    sites = []
    for node in src.nodes:
        if not (isinstance(node, cst.For) and isinstance(node.target, cst.Name)
                and "epoch" in node.target.value.lower() and isinstance(node.iter, cst.Call)
                and dotted(node.iter.func) == "range"):
            continue
        args = node.iter.args
        if not 1 <= len(args) <= 2 or any(a.keyword or a.star for a in args):
            continue
        stop = args[-1].value
        if len(args) == 2:
            start = args[0].value
            start_literal = start.evaluated_value if isinstance(start, cst.Integer) else None
            if start_literal == 1 and (count := _before_plus_one(stop)):
                stop = count
            elif start_literal != 0 and (number_node(start) or src.site(start)):
                continue
        site = src.site(stop)
        if site and not (site.subject and src.uses(site.subject) > 2):  # a constant used elsewhere too
            sites.append(Site(site.node, site.subject or "range"))
    return sites


def double_epochs(src: Source) -> Rewrite | None:
    """`epochs=` arguments and defaults, constants named EPOCHS or *_EPOCHS, and the stop of an
    epoch loop's range, doubled."""
    sites = src.keyword_sites("epochs") + _epoch_range_sites(src)
    edits, done = src.change_sites(sites, scale(2, integer=True))
    return rewritten(src, "double epochs", edits, done)


# --- the optimizer ----------------------------------------------------------------------------


def _rate_arg(call: cst.Call) -> cst.Arg | None:
    """The learning rate argument of a torch optimizer: `lr=` or the second positional."""
    return keyword(call, "lr") or next(iter(positional(call)[1:2]), None)


def _no_star(call: cst.Call) -> bool:
    return not any(a.star for a in call.args)


def change_learning_rate(src: Source, factor: float, header: str) -> Rewrite | None:
    """Rates given as numbers (`lr=` in a torch optimizer or anywhere, a positional rate,
    constants named LR or *_LR) are scaled; an optimizer built without a rate gets its default
    rate scaled, written out."""
    change = scale(factor)
    sites = src.keyword_sites("lr") + src.keyword_sites("learning_rate")
    defaults: list[tuple[cst.Call, str]] = []
    for call, name in _torch_calls(src, "torch.optim", OPTIMIZER_DEFAULTS):
        rate = _rate_arg(call)
        if rate is not None:
            if site := src.site(rate.value):
                sites.append(site)
        elif _no_star(call):
            defaults.append((call, name))
    edits, done = src.change_sites(sites, change)
    for call, name in defaults:
        default = OPTIMIZER_DEFAULTS[name]
        text = format_number(change(default))
        edits[id(call)] = partial(with_keyword, name="lr", value=text)
        done.append(Done(src.line(call), default, change(default), f"{name} default"))
    return rewritten(src, header, edits, done)


def _position(call: cst.Call, arg: cst.Arg) -> int:
    return next(i for i, candidate in enumerate(call.args) if candidate is arg)


def _switched(src: Source, call: cst.Call, target: str) -> dict[int, Edit] | None:
    """The edits that make optimizer `call` a `target` at its starting rate, keeping the
    arguments `target` takes; None when the call passes arguments that cannot be mapped."""
    spelled = _sibling(src, call.func, target)
    if spelled is None or not _no_star(call) or len(positional(call)) > 2:
        return None
    func, edits = spelled
    accepted = _OPTIMIZER_KEYWORDS[target]
    dropped = [_position(call, a) for a in call.args if a.keyword and a.keyword.value not in accepted]
    rate_arg = _rate_arg(call)
    rate = cst.parse_expression(format_number(SWITCH_RATES[target]))

    def switch(updated: cst.Call) -> cst.Call:
        args = list(updated.args)  # where the arguments of `call` were
        if rate_arg is not None:
            index = _position(call, rate_arg)
            args[index] = args[index].with_changes(value=rate)
        new = without_args(updated.with_changes(func=func, args=args), [args[i] for i in dropped])
        if rate_arg is None:
            new = with_keyword(new, "lr", format_number(SWITCH_RATES[target]))
        if target == "SGD":
            new = with_keyword(new, "momentum", format_number(SGD_MOMENTUM))
        return new

    edits[id(call)] = switch
    return edits


def switch_optimizer(src: Source, sources: tuple[str, ...], target: str) -> Rewrite | None:
    """Every torch optimizer of a class in `sources` becomes a `target` at its starting rate
    (SWITCH_RATES; SGD with momentum 0.9); arguments the target does not take are dropped."""
    edits: dict[int, Edit] = {}
    done: list[Done] = []
    for call, name in _torch_calls(src, "torch.optim", sources):
        rate_arg = _rate_arg(call)
        site = src.site(rate_arg.value) if rate_arg else None
        if rate_arg is not None and site is None:
            continue  # a computed rate: what changes cannot be said
        if (changes := _switched(src, call, target)) is None:
            continue
        edits.update(changes)
        old = site.node.evaluated_value if site else OPTIMIZER_DEFAULTS[name]
        note = f", momentum={format_number(SGD_MOMENTUM)}" if target == "SGD" else ""
        done.append(Done(src.line(call), old, SWITCH_RATES[target], f"{name} → {target}, lr", note))
    return rewritten(src, "switch optimizer", edits, done)


# --- Linear layers in nn.Sequential -----------------------------------------------------------


@dataclass(frozen=True)
class _Linear:
    call: cst.Call
    sequential: cst.Call
    index: int  # among the Sequential's arguments
    is_output: bool  # the last Linear of its Sequential


def _feature_arg(linear: cst.Call, name: str, position: int) -> cst.Arg | None:
    return keyword(linear, name) or next(iter(positional(linear)[position:position + 1]), None)


def _linear_layers(src: Source) -> list[_Linear]:
    """The Linear layers given directly to an `nn.Sequential(...)`, in source order."""
    bindings = _bindings(src)
    found: list[_Linear] = []
    for sequential, _ in _torch_calls(src, "torch.nn", {"Sequential"}):
        indexed = [
            (index, arg.value) for index, arg in enumerate(sequential.args)
            if not arg.keyword and not arg.star and isinstance(arg.value, cst.Call)
            and _resolve(bindings, arg.value.func) == "torch.nn.Linear"
            and _feature_arg(arg.value, "in_features", 0) and _feature_arg(arg.value, "out_features", 1)
        ]
        found += [_Linear(call, sequential, index, call is indexed[-1][1]) for index, call in indexed]
    return sorted(found, key=lambda layer: src.start(layer.call))


def _call(func: cst.BaseExpression, *args: cst.BaseExpression) -> cst.Call:
    space = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    return cst.Call(func, [cst.Arg(arg, comma=space) for arg in args[:-1]] + [cst.Arg(arg) for arg in args[-1:]])


def add_linear(src: Source) -> Rewrite | None:
    """A Linear layer and a ReLU before the output layer: as wide as the output layer's input
    (so nothing else changes) when a hidden Linear layer comes before it, else
    DEFAULT_LINEAR_WIDTH wide, with the output layer's in_features set to match."""
    layers = _linear_layers(src)
    if not layers:
        return None
    output = layers[-1]
    relu = _sibling(src, output.call.func, "ReLU")
    if relu is None:
        return None
    relu_func, edits = relu
    in_arg = _feature_arg(output.call, "in_features", 0)
    assert in_arg is not None  # _linear_layers takes only layers that have one
    in_value = in_arg.value
    in_code = " ".join(src.code(in_value).split())
    has_hidden = any(layer.sequential is output.sequential for layer in layers[:-1])
    width = in_value if has_hidden else cst.Integer(str(DEFAULT_LINEAR_WIDTH))
    new_layers: list[cst.BaseExpression] = [_call(output.call.func, in_value, width), _call(relu_func)]
    edits[id(output.sequential)] = lambda updated: insert_args(updated, output.index, new_layers)
    note = ""
    if not has_hidden:
        edits[id(in_value)] = replace_with(str(DEFAULT_LINEAR_WIDTH))
        note = f", its in_features {in_code} → {DEFAULT_LINEAR_WIDTH}"
    width_code = in_code if has_hidden else DEFAULT_LINEAR_WIDTH
    description = (f"add Linear({in_code}, {width_code}) + ReLU before the output layer "
                   f"(line {src.line(output.call)}{note})")
    return Rewrite(src.rewrite(edits), description)


def _width_site(src: Source, layer: cst.Call, name: str, position: int, subject: str) -> Site | None:
    arg = _feature_arg(layer, name, position)
    site = src.site(arg.value) if arg else None
    if site is None or not isinstance(site.node, cst.Integer):
        return None
    return Site(site.node, site.subject or subject)


def _widening(src: Source, hidden: _Linear) -> list[Site] | None:
    """The sites that change together when `hidden` is widened: its out_features, the width of
    the norm layers after it and the next Linear's in_features; None when a layer in between
    may change the width, or the next in_features is not the same number."""
    out = _width_site(src, hidden.call, "out_features", 1, "Linear")
    if out is None:
        return None
    width = out.node.evaluated_value
    sites = [out]
    for arg in hidden.sequential.args[hidden.index + 1:]:
        layer = arg.value
        if not isinstance(layer, cst.Call):
            return None
        name = callee(layer)
        if name == "Linear":
            after = _width_site(src, layer, "in_features", 0, "Linear in_features")
            return [*sites, after] if after and after.node.evaluated_value == width else None
        if name in _NORMS:
            norm = _width_site(src, layer, _NORMS[name], 0, name)
            if norm is None or norm.node.evaluated_value != width:
                return None
            sites.append(norm)
        elif name not in _WIDTH_KEEPING:
            return None
    return None


def widen_linear(src: Source) -> Rewrite | None:
    """The narrowest hidden Linear layer with a literal width gets twice that width, or its
    output layer's width when that is more; the layers after it that see that width follow.
    A width the output layer shares (a constant) is left alone: the model's output would change."""
    layers = _linear_layers(src)
    outputs = {id(layer.sequential): _width_site(src, layer.call, "out_features", 1, "")
               for layer in layers if layer.is_output}
    candidates = []
    for layer in layers:
        if not layer.is_output and (sites := _widening(src, layer)):
            output = outputs[id(layer.sequential)]
            if output is None or all(site.node is not output.node for site in sites):
                candidates.append((layer, sites))
    if not candidates:
        return None
    hidden, sites = min(candidates, key=lambda pair: pair[1][0].node.evaluated_value)
    output = outputs[id(hidden.sequential)]
    width = max(2 * sites[0].node.evaluated_value, output.node.evaluated_value if output else 0)
    return rewritten(src, "widen", *src.change_sites(sites, lambda _old: width))
