"""Keras tweaks: Dense layers, dropout, epochs, batch size and the learning rate.

Where a file holds several candidates the rules are:
- `add_dense` and `add_dropout` act on the Dense layer that comes last in the file among the
  recognised forms (a `Sequential([...])` list, a `model.add(Dense(...))` chain, a functional
  `y = Dense(...)(x)` assignment): the output layer of the model defined last.
- `widen_dense` acts on the narrowest hidden Dense layer (not the last of its model) of the file.
- the other tweaks change every site they recognise (every `epochs=` literal, every optimizer),
  so one tweak means the same thing to every model in the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeGuard

import libcst as cst

from jobs.tune.tweaks.layout import add_import_name, insert_element, with_keyword
from jobs.tune.tweaks.numeric import Change, format_number, scale
from jobs.tune.tweaks.source import (
    Done,
    Edit,
    Rewrite,
    Site,
    Source,
    callee,
    dotted,
    keyword,
    positional,
    replace_with,
    rewritten,
)

DEFAULT_DENSE_WIDTH = 128

# Keras optimizer identifiers accepted by `compile(optimizer="…")`: class name, default rate.
OPTIMIZER_DEFAULTS: dict[str, tuple[str, float]] = {
    "adam": ("Adam", 0.001), "adamw": ("AdamW", 0.001), "nadam": ("Nadam", 0.001),
    "adamax": ("Adamax", 0.001), "rmsprop": ("RMSprop", 0.001), "sgd": ("SGD", 0.01),
    "adagrad": ("Adagrad", 0.001), "adadelta": ("Adadelta", 0.001), "ftrl": ("Ftrl", 0.001),
    "lion": ("Lion", 0.001),
}
_OPTIMIZER_CLASSES = {name for name, _ in OPTIMIZER_DEFAULTS.values()}


# --- Dense layers -----------------------------------------------------------------------------


def _is_dense(node: cst.BaseExpression) -> TypeGuard[cst.Call]:
    return isinstance(node, cst.Call) and callee(node) == "Dense"


def _units_node(dense: cst.Call) -> cst.Integer | None:
    arg = keyword(dense, "units") or next(iter(positional(dense)), None)
    return arg.value if arg and isinstance(arg.value, cst.Integer) else None


def _units(dense: cst.Call) -> int | None:
    node = _units_node(dense)
    return node.evaluated_value if node else None


@dataclass(frozen=True)
class _DenseLayer:
    """A recognised Dense layer: where it sits and how to insert a layer before it."""

    dense: cst.Call
    group: object  # layers of one model share it; the last of them is the model's output
    anchor: cst.CSTNode  # the node the insertion edits
    insert: Callable[[Any, str], Any]  # (updated anchor, new layer code) -> replacement
    previous: cst.BaseExpression | None  # the layer right before it, in the same form


def _dense_layers(src: Source) -> list[_DenseLayer]:
    """The recognised Dense layers, in source order."""
    found: list[_DenseLayer] = []
    for node in src.nodes:
        if isinstance(node, cst.Call) and callee(node) == "Sequential":
            arg = keyword(node, "layers") or next(iter(positional(node)), None)
            if arg and isinstance(arg.value, cst.List):
                listed = arg.value
                for index, element in enumerate(listed.elements):
                    if _is_dense(value := element.value):
                        found.append(_DenseLayer(
                            value, id(listed), listed, _element_inserter(index),
                            listed.elements[index - 1].value if index else None))
        elif isinstance(node, (cst.Module, cst.IndentedBlock)):
            for previous, statement in zip([None, *node.body], node.body, strict=False):
                found.extend(_statement_dense_layer(src, statement, _statement_layer(previous)))
    return sorted(found, key=lambda layer: src.start(layer.dense))


def _element_inserter(index: int) -> Callable[[Any, str], Any]:
    """Inserts a layer's code as element `index` of the (updated) list."""
    return lambda updated, code: insert_element(updated, index, cst.parse_expression(code))


def _statement_layer(statement: cst.CSTNode | None) -> cst.Call | None:
    """The layer of a `model.add(Layer(...))` or `y = Layer(...)(x)` statement."""
    if not (isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1):
        return None
    small = statement.body[0]
    if isinstance(small, cst.Expr) and isinstance(call := small.value, cst.Call):
        if (isinstance(call.func, cst.Attribute) and call.func.attr.value == "add"
                and len(call.args) == 1 and isinstance(call.args[0].value, cst.Call)):
            return call.args[0].value
    if isinstance(small, cst.Assign) and isinstance(outer := small.value, cst.Call):
        if (isinstance(outer.func, cst.Call) and len(outer.args) == 1 and not outer.args[0].keyword
                and isinstance(outer.args[0].value, cst.Name)):
            return outer.func
    return None


def _statement_dense_layer(
    src: Source, statement: cst.CSTNode, previous: cst.Call | None,
) -> list[_DenseLayer]:
    layer = _statement_layer(statement)
    if layer is None or not _is_dense(layer) or not isinstance(statement, cst.SimpleStatementLine):
        return []
    small = statement.body[0]  # `model.add(Dense(...))` or `y = Dense(...)(x)`, as _statement_layer found

    def insert_statement(code_for: Callable[[str], str]) -> Callable[[Any, str], Any]:
        return lambda updated, code: cst.FlattenSentinel([cst.parse_statement(code_for(code)), updated])

    if isinstance(small, cst.Expr):  # model.add(Dense(...))
        add = cst.ensure_type(cst.ensure_type(small.value, cst.Call).func, cst.Attribute)
        receiver = src.code(add.value)
        new_statement = insert_statement(lambda code: f"{receiver}.add({code})\n")
        return [_DenseLayer(layer, ("add", receiver), statement, new_statement, previous)]
    applied = cst.ensure_type(cst.ensure_type(small, cst.Assign).value, cst.Call)  # y = Dense(...)(x)
    source_name = cst.ensure_type(applied.args[0].value, cst.Name).value
    new_statement = insert_statement(lambda code: f"{source_name} = {code}({source_name})\n")
    return [_DenseLayer(layer, ("functional",), statement, new_statement, previous)]


def add_dense(src: Source) -> Rewrite | None:
    layers = _dense_layers(src)
    if not layers:
        return None
    output = layers[-1]
    hidden = next((layer for layer in reversed(layers[:-1]) if layer.group == output.group), None)
    width = (_units(hidden.dense) if hidden else None) or DEFAULT_DENSE_WIDTH
    strings = [a.value.value for a in output.dense.args if isinstance(a.value, cst.SimpleString)]
    quote = "'" if strings and strings[0].startswith("'") else '"'  # the file's own quotes
    new_dense = f"{src.code(output.dense.func)}({width}, activation={quote}relu{quote})"
    new_source = src.rewrite({id(output.anchor): lambda updated: output.insert(updated, new_dense)})
    line = src.line(output.dense)
    return Rewrite(new_source, f"add Dense({width}, relu) before the output layer (line {line})")


def widen_dense(src: Source) -> Rewrite | None:
    """The narrowest hidden Dense layer with a literal width gets twice that width, or the
    output's width when that is more (a bottleneck narrower than the output loses information)."""
    layers = _dense_layers(src)
    outputs = {layer.group: layer for layer in layers}  # the last one of each group
    hidden = [(node, layer) for layer in layers
              if layer is not outputs[layer.group] and (node := _units_node(layer.dense)) and node.evaluated_value]
    if not hidden:
        return None
    node, narrowest = min(hidden, key=lambda pair: pair[0].evaluated_value)
    width = max(2 * node.evaluated_value, _units(outputs[narrowest.group].dense) or 0)
    site = Site(node, "Dense")
    return rewritten(src, "widen", *src.change_sites([site], lambda _old: width))


# --- Dropout ----------------------------------------------------------------------------------

_KERAS_LAYER_MODULES = ("keras.layers", "tensorflow.keras.layers")


def _import_dropout(src: Source) -> dict[int, Edit] | None:
    """The edit that makes a bare `Dropout` importable: none when it already is, `Dropout` added
    to the `from … import Dense`; None when Dense is not imported that way."""
    dense_import: tuple[cst.ImportFrom, int] | None = None
    for node in src.nodes:
        if not (isinstance(node, cst.ImportFrom) and not node.relative and node.module is not None
                and dotted(node.module) in _KERAS_LAYER_MODULES):
            continue
        if isinstance(node.names, cst.ImportStar):
            return {}
        for index, alias in enumerate(node.names):
            if alias.asname is None and alias.evaluated_name == "Dropout":
                return {}
            if alias.asname is None and alias.evaluated_name == "Dense":
                dense_import = dense_import or (node, index)
    if dense_import is None:
        return None
    statement, index = dense_import
    return {id(statement): lambda updated: add_import_name(updated, index, "Dropout")}


def add_dropout(src: Source) -> Rewrite | None:
    layers = _dense_layers(src)
    if not layers:
        return None
    output = layers[-1]
    if isinstance(output.previous, cst.Call) and callee(output.previous) == "Dropout":
        return None
    func = output.dense.func
    edits: dict[int, Edit] | None
    if isinstance(func, cst.Attribute):  # layers.Dense -> layers.Dropout
        edits, dropout = {}, f"{src.code(func.value)}.Dropout(0.3)"
    elif (edits := _import_dropout(src)) is not None:
        dropout = "Dropout(0.3)"
    else:
        return None
    edits[id(output.anchor)] = lambda updated: output.insert(updated, dropout)
    line = src.line(output.dense)
    return Rewrite(src.rewrite(edits), f"add Dropout(0.3) before the output layer (line {line})")


# --- epochs and batch size --------------------------------------------------------------------


def double_epochs(src: Source) -> Rewrite | None:
    edits, done = src.change_sites(src.keyword_sites("epochs"), scale(2, integer=True))
    return rewritten(src, "double epochs", edits, done)


_INFERENCE_CALLS = frozenset({"predict", "predict_on_batch", "evaluate", "test_on_batch"})


def change_batch_size(src: Source, change: Change, header: str) -> Rewrite | None:
    """Training batch sizes only: an inference batch size does not change what is learnt."""
    edits, done = src.change_sites(src.keyword_sites("batch_size", _INFERENCE_CALLS), change)
    return rewritten(src, header, edits, done)


# --- learning rate ----------------------------------------------------------------------------


def _is_optimizer(call: cst.Call) -> bool:
    return callee(call) in _OPTIMIZER_CLASSES or ".optimizers." in (dotted(call.func) or "")


def _optimizer_spelling(src: Source, class_name: str) -> tuple[str, str | None]:
    """How to spell a Keras optimizer class with this file's imports: (expression, import line to
    add or None). Prefers the class itself, then an `optimizers` module, then keras, then tf."""
    spellings: dict[str, str] = {}
    uses_tensorflow = False
    for module, name, bound in src.imports():
        uses_tensorflow |= (module or name).split(".")[0] == "tensorflow"
        if module in ("keras.optimizers", "tensorflow.keras.optimizers") and name == class_name:
            spellings.setdefault("class", bound)
        elif (module in ("keras", "tensorflow.keras") and name == "optimizers") or (
                not module and name in ("keras.optimizers", "tensorflow.keras.optimizers")):
            spellings.setdefault("optimizers", f"{bound}.{class_name}")
        elif (module == "tensorflow" and name == "keras") or (
                not module and name in ("keras", "tensorflow.keras")):
            spellings.setdefault("keras", f"{bound}.optimizers.{class_name}")
        elif not module and name == "tensorflow":
            spellings.setdefault("tf", f"{bound}.keras.optimizers.{class_name}")
    for kind in ("class", "optimizers", "keras", "tf"):
        if kind in spellings:
            return spellings[kind], None
    package = "tensorflow.keras" if uses_tensorflow else "keras"
    return f"optimizers.{class_name}", f"from {package} import optimizers\n"


def _uses_keras(src: Source) -> bool:
    return any((module or name).split(".")[0] in ("keras", "tensorflow") for module, name, _ in src.imports())


def change_learning_rate(src: Source, factor: float, header: str) -> Rewrite | None:
    """Rates given as numbers (optimizer arguments, `learning_rate=`/`lr=` anywhere, constants
    named like them) are scaled; a Keras optimizer built without a rate, or named by a string
    in compile(), gets its default rate scaled, written out."""
    change = scale(factor)
    sites = src.keyword_sites("learning_rate") + src.keyword_sites("lr")
    defaults_to_write: list[tuple[cst.Call, str, float]] = []  # (optimizer, class, default rate)
    for call in filter(_is_optimizer, src.calls):
        rate = keyword(call, "learning_rate", "lr") or next(iter(positional(call)), None)
        if rate is not None:
            if site := src.site(rate.value):
                sites.append(site)
        elif callee(call) in _OPTIMIZER_CLASSES and not call.args and _uses_keras(src):
            default = next(r for name, r in OPTIMIZER_DEFAULTS.values() if name == callee(call))
            defaults_to_write.append((call, callee(call), default))
    edits, done = src.change_sites(sites, change)
    for call, class_name, default in defaults_to_write:
        text = format_number(change(default))
        edits[id(call)] = partial(with_keyword, name="learning_rate", value=text)
        done.append(Done(src.line(call), default, change(default), f"{class_name} default"))

    import_to_add: str | None = None
    for call in src.calls:
        arg = keyword(call, "optimizer") or next(iter(positional(call)), None)
        if callee(call) != "compile" or not (arg and isinstance(arg.value, cst.SimpleString)):
            continue
        known = OPTIMIZER_DEFAULTS.get(str(arg.value.evaluated_value).lower())
        if known is None:
            continue
        class_name, default = known
        spelling, needed_import = _optimizer_spelling(src, class_name)
        if needed_import and src.last_import_statement() is None:
            continue  # no import to put ours after: not a Keras script we can safely extend
        import_to_add = import_to_add or needed_import
        text = format_number(change(default))
        edits[id(arg.value)] = replace_with(f"{spelling}(learning_rate={text})")
        done.append(Done(src.line(arg.value), default, change(default),
                         note=f", optimizer {src.code(arg.value)} → {spelling}"))
    if import_to_add:
        anchor = src.last_import_statement()
        edits[id(anchor)] = lambda updated: cst.FlattenSentinel([updated, cst.parse_statement(import_to_add)])
    return rewritten(src, header, edits, done)
