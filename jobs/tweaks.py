"""Model tweaks: small changes that may lift a model's metric, tried when it is below threshold.

A tweak rewrites the model's source with libcst, so formatting and comments survive, and says
in one line what it changed. When it finds nothing it can change, it returns None (skipped);
it never pretends. A script that reads PUSHTUNE_PARAMS (through `jobs.kit.params(**defaults)`)
gets its tweaks as parameter changes instead: its source is left alone.

Where a file holds several candidates the rules are:
- `add_dense` and `add_dropout` act on the Dense layer that comes last in the file among the
  recognised forms (a `Sequential([...])` list, a `model.add(Dense(...))` chain, a functional
  `y = Dense(...)(x)` assignment): the output layer of the model defined last.
- `widen_dense` acts on the narrowest hidden Dense layer (not the last of its model) of the file.
- the other tweaks change every site they recognise (every `epochs=` literal, every optimizer,
  every estimator), so one tweak means the same thing to every model in the file.
"""

from __future__ import annotations

import ast
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from jobs.errors import UserError

_KERAS_LADDER = (
    "add_dense", "double_epochs", "halve_learning_rate", "double_learning_rate", "halve_batch_size",
)
LADDERS: dict[str, tuple[str, ...]] = {
    "cnn": _KERAS_LADDER,
    "ann": _KERAS_LADDER,
    "regression": ("c_times_10", "alpha_div_10", "double_max_iter"),
}

DEFAULT_DENSE_WIDTH = 128

# Keras optimizer identifiers accepted by `compile(optimizer="…")`: class name, default rate.
OPTIMIZER_DEFAULTS: dict[str, tuple[str, float]] = {
    "adam": ("Adam", 0.001), "adamw": ("AdamW", 0.001), "nadam": ("Nadam", 0.001),
    "adamax": ("Adamax", 0.001), "rmsprop": ("RMSprop", 0.001), "sgd": ("SGD", 0.01),
    "adagrad": ("Adagrad", 0.001), "adadelta": ("Adadelta", 0.001), "ftrl": ("Ftrl", 0.001),
    "lion": ("Lion", 0.001),
}
_OPTIMIZER_CLASSES = {name for name, _ in OPTIMIZER_DEFAULTS.values()}

# scikit-learn defaults, used when an estimator that takes the parameter does not set it.
C_DEFAULTS = {"LogisticRegression": 1.0, "SVC": 1.0, "SVR": 1.0, "LinearSVC": 1.0, "LinearSVR": 1.0}
ALPHA_DEFAULTS = {
    "Ridge": 1.0, "RidgeClassifier": 1.0, "Lasso": 1.0, "ElasticNet": 1.0,
    "SGDClassifier": 0.0001, "SGDRegressor": 0.0001,
}
MAX_ITER_DEFAULTS = {
    "LogisticRegression": 100, "SGDClassifier": 1000, "SGDRegressor": 1000, "Lasso": 1000,
    "ElasticNet": 1000, "LinearSVC": 1000, "LinearSVR": 1000,
}


@dataclass(frozen=True)
class TweakResult:
    source: str  # the new source (unchanged in parameter mode)
    params: dict  # the new params (unchanged in source mode)
    description: str  # one line: what changed and where
    old: int | float | None = None  # numeric tweaks: the first changed value, before
    new: int | float | None = None  # … and after
    sites: int = 0  # double_epochs: how many places were changed


@dataclass(frozen=True)
class Tweak:
    """One tweak: its source rewrite, and the parameter change it makes instead when the script
    reads PUSHTUNE_PARAMS (the first of `parameters`, lower case, the script declares or is
    given; no parameter mode when `change` is None)."""

    name: str
    rewrite: SourceTweak
    parameters: tuple[str, ...] = ()
    change: Change | None = None
    counts_sites: bool = False  # fill TweakResult.sites


# --- numbers --------------------------------------------------------------------------------


def format_number(value: int | float) -> str:
    """A readable literal: ints as is, floats to 10 significant digits (0.0005, not 0.00050000001)."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.10g}"
    return text if any(c in text for c in ".e") else f"{text}.0"


def _tidy(value: int | float) -> int | float:
    """`value` without float noise (what format_number writes, read back)."""
    return value if isinstance(value, int) else float(format_number(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    """Within float range and not inf or nan: a value a literal can be written back as, and a
    script can compute with (1e308 ×10 is not; neither is a 400-digit integer)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


Change = Callable[[Any], "int | float | None"]  # new value, or None when it does not apply


def _scale(factor: float, integer: bool = False) -> Change:
    def change(value: Any) -> int | float | None:
        if not _is_number(value) or not _finite(value) or value <= 0 or (integer and not isinstance(value, int)):
            return None
        new = value * factor
        if not _finite(new):  # beyond float range: the change does not apply
            return None
        new = _tidy(new)
        return int(new) if integer else new

    return change


def _halve_count(value: Any) -> int | None:
    return value // 2 if isinstance(value, int) and not isinstance(value, bool) and value > 1 else None


def _add_one_layer(value: Any) -> int | None:
    return value + 1 if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else None


def _at_most_32(value: Any) -> int | None:
    return 32 if isinstance(value, int) and not isinstance(value, bool) and value > 32 else None


def _raise_dropout(value: Any) -> float | None:
    """0 -> 0.2, then steps of 0.1 up to 0.5."""
    if not _is_number(value) or not 0 <= value < 0.5:
        return None
    new = 0.2 if value == 0 else _tidy(value + 0.1)
    return new if new <= 0.5 else None


# --- reading a script (ast, never executed) -------------------------------------------------


class CannotRewrite(UserError):
    """The source is Python, but nested too deeply (or too oddly) to analyse or rewrite: every
    tweak is skipped."""


MAX_DEPTH = 200  # syntax tree levels the rewriter takes (it recurses); real scripts nest a few dozen


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise UserError(f"model source does not parse (line {exc.lineno}: {exc.msg})") from None
    except ValueError:  # Python 3.11 says so for a null byte
        raise UserError("model source does not parse (it holds a null byte)") from None
    except (RecursionError, MemoryError):
        raise CannotRewrite("model source is nested too deeply to analyse") from None


def _depth(tree: ast.AST) -> int:
    """How deeply the tree nests as libcst builds it, where `a and b and c` is nested too."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        depth += len(node.values) - 1 if isinstance(node, ast.BoolOp) else 0
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _kit_params_spellings(tree: ast.Module) -> set[str]:
    """How this file can spell jobs.kit.params, from its imports."""
    spellings: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "jobs.kit":
                    spellings.add(f"{alias.asname}.params" if alias.asname else "jobs.kit.params")
                elif alias.name == "jobs":
                    spellings.add(f"{alias.asname or 'jobs'}.kit.params")
        elif isinstance(node, ast.ImportFrom) and not node.level:
            for alias in node.names:
                if node.module == "jobs" and alias.name == "kit":
                    spellings.add(f"{alias.asname or 'kit'}.params")
                elif node.module == "jobs.kit" and alias.name == "params":
                    spellings.add(alias.asname or "params")
    return spellings


def _kit_params_calls(tree: ast.Module) -> list[ast.Call]:
    spellings = _kit_params_spellings(tree)
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _dotted(node.func) in spellings
    ]
    return sorted(calls, key=lambda call: (call.lineno, call.col_offset))


def _is_params_name(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value == "PUSHTUNE_PARAMS"


def _reads_params_variable(tree: ast.Module) -> bool:
    """os.environ["PUSHTUNE_PARAMS"], os.environ.get("PUSHTUNE_PARAMS"), os.getenv("PUSHTUNE_PARAMS")."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_params_name(node.slice):
            if (_dotted(node.value) or "").split(".")[-1] == "environ":
                return True
        if isinstance(node, ast.Call) and node.args and _is_params_name(node.args[0]):
            name = _dotted(node.func) or ""
            if name.endswith("environ.get") or name.split(".")[-1] == "getenv":
                return True
    return False


def reads_params(source: str) -> bool:
    """True when the script takes its hyperparameters from PUSHTUNE_PARAMS."""
    tree = _parse(source)
    return bool(_kit_params_calls(tree)) or _reads_params_variable(tree)


_NOT_LITERAL = object()
_SCALARS = (int, float, str, bool, type(None))


def _literal(node: ast.expr) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, _SCALARS) for item in value):
        return list(value)
    return _NOT_LITERAL


def declared_params(source: str) -> dict:
    """The literal keyword defaults of the script's jobs.kit.params(...) call(s); {} when none."""
    declared: dict = {}
    for call in _kit_params_calls(_parse(source)):
        for keyword in call.keywords:
            if keyword.arg is not None and (value := _literal(keyword.value)) is not _NOT_LITERAL:
                declared[keyword.arg] = value
    return declared


# --- parameter mode -------------------------------------------------------------------------

_ALIASES = {"lr": "learning_rate", "learning_rate": "lr"}  # as jobs.kit.params matches them

def _overlay(declared: dict, given: dict) -> dict:
    """`given` over `declared`, keys matched case-insensitively, keeping the declared spelling."""
    merged = dict(declared)
    by_lower = {key.lower(): key for key in declared}
    for key, value in given.items():
        name = by_lower.get(key.lower()) or by_lower.get(_ALIASES.get(key.lower(), ""))
        merged[name or key] = value
    return merged


def _apply_to_params(tweak: Tweak, source: str, params: dict) -> TweakResult | None:
    if tweak.change is None:
        return None
    merged = _overlay(declared_params(source), params)
    key = next((k for wanted in tweak.parameters for k in merged if k.lower() == wanted), None)
    if key is None:
        return None
    old, new = merged[key], tweak.change(merged[key])
    if new is None or new == old:
        return None
    description = f"set {key} {format_number(old)} → {format_number(new)} (parameter)"
    return TweakResult(source, {**merged, key: new}, description, old, new, int(tweak.counts_sites))


# --- source mode: the parsed file -----------------------------------------------------------

Edit = Callable[[Any], Any]  # updated node -> its replacement (a node or a FlattenSentinel)


def _cst_dotted(node: cst.CSTNode) -> str | None:
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if not isinstance(node, cst.Name):
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


def _callee(call: cst.Call) -> str:
    """The last name of what is called: `Dense` for `tf.keras.layers.Dense(...)`."""
    return (_cst_dotted(call.func) or "").rsplit(".", 1)[-1]


def _keyword(call: cst.Call, *names: str) -> cst.Arg | None:
    return next((a for a in call.args if a.keyword and a.keyword.value in names), None)


def _positional(call: cst.Call) -> list[cst.Arg]:
    return [a for a in call.args if a.keyword is None and not a.star]


def _number_node(node: cst.BaseExpression) -> cst.Integer | cst.Float | None:
    return node if isinstance(node, (cst.Integer, cst.Float)) else None


@dataclass(frozen=True)
class _Site:
    """A numeric literal to change, and how to name it in the description."""

    node: cst.Integer | cst.Float
    subject: str = ""


@dataclass(frozen=True)
class _Done:
    line: int
    old: int | float
    new: int | float
    subject: str = ""
    note: str = ""

    def text(self) -> str:
        subject = f"{self.subject} " if self.subject else ""
        change = f"{format_number(self.old)} → {format_number(self.new)}"
        return f"{subject}{change} (line {self.line}{self.note})"


class _Replacer(cst.CSTTransformer):
    def __init__(self, edits: dict[int, Edit]) -> None:
        super().__init__()
        self.edits = edits

    def on_leave(self, original_node, updated_node):  # type: ignore[override]
        edit = self.edits.get(id(original_node))
        return edit(updated_node) if edit else updated_node


class _Source:
    """A parsed model file: its nodes in source order, their lines, and rewriting."""

    def __init__(self, source: str) -> None:
        # A clear UserError for a syntax error; and libcst never sees a tree deep enough to
        # overflow its native parser's stack (which kills the process, as a 10,000-term `and` does).
        if _depth(_parse(source)) > MAX_DEPTH:
            raise CannotRewrite(f"model source nests more than {MAX_DEPTH} levels deep")
        try:
            wrapper = MetadataWrapper(cst.parse_module(source))
        except cst.ParserSyntaxError as exc:  # Python parses it (above): libcst's limits
            raise CannotRewrite(f"libcst cannot parse the model source: {exc.message}") from None
        self.module = wrapper.module
        self.positions = wrapper.resolve(PositionProvider)
        self.nodes = list(self._walk(self.module))
        self.calls = [node for node in self.nodes if isinstance(node, cst.Call)]
        self.constants = self._module_constants()

    @staticmethod
    def _walk(root: cst.CSTNode) -> Iterator[cst.CSTNode]:
        stack = [root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def line(self, node: cst.CSTNode) -> int:
        return self.positions[node].start.line

    def start(self, node: cst.CSTNode) -> tuple[int, int]:
        return self.positions[node].start.line, self.positions[node].start.column

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def rewrite(self, edits: dict[int, Edit]) -> str:
        return self.module.visit(_Replacer(edits)).code

    def _module_constants(self) -> dict[str, cst.Integer | cst.Float]:
        """Module-level names bound once, to a number literal (`EPOCHS = 5`, `LR: float = 1e-3`)."""
        bound: dict[str, cst.BaseExpression | None] = {}
        counts: Counter[str] = Counter()
        statements = [s for s in self.module.body if isinstance(s, cst.SimpleStatementLine)]
        for small in (small for statement in statements for small in statement.body):
            if isinstance(small, cst.Assign):
                for target in small.targets:
                    if isinstance(target.target, cst.Name):
                        counts[target.target.value] += 1
                        bound[target.target.value] = small.value if len(small.targets) == 1 else None
            elif isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                counts[small.target.value] += 1
                bound[small.target.value] = small.value
        return {
            name: value for name, value in bound.items()
            if counts[name] == 1 and value is not None and _number_node(value)
        }

    def uses(self, name: str) -> int:
        return sum(1 for node in self.nodes if isinstance(node, cst.Name) and node.value == name)

    def site(self, value: cst.BaseExpression) -> _Site | None:
        """The literal behind a value: the value itself, or the module constant it names."""
        if node := _number_node(value):
            return _Site(node)
        if isinstance(value, cst.Name) and value.value in self.constants:
            return _Site(self.constants[value.value], value.value)
        return None

    def keyword_sites(self, name: str, skip_calls: frozenset[str] = frozenset()) -> list[_Site]:
        """`name=<number>` in calls (except to `skip_calls`) and function defaults, and used
        module constants spelled NAME or *_NAME (`EPOCHS`, `NUM_EPOCHS`), even when used another
        way (`range(EPOCHS)`)."""
        sites = [
            s for c in self.calls
            if _callee(c) not in skip_calls and (a := _keyword(c, name)) and (s := self.site(a.value))
        ]
        sites += [
            s for node in self.nodes
            if isinstance(node, cst.Param) and node.name.value == name and node.default
            and (s := self.site(node.default))
        ]
        sites += [
            _Site(literal, constant) for constant, literal in self.constants.items()
            if (constant.upper() == name.upper() or constant.upper().endswith(f"_{name.upper()}"))
            and self.uses(constant) > 1
        ]
        return sites

    def change_sites(self, sites: list[_Site], change: Change) -> tuple[dict[int, Edit], list[_Done]]:
        edits: dict[int, Edit] = {}
        done: list[_Done] = []
        for site in sites:
            old = site.node.evaluated_value
            new = change(old)
            if id(site.node) in edits or new is None or new == old:
                continue
            replacement = cst.parse_expression(format_number(new))
            edits[id(site.node)] = lambda _updated, replacement=replacement: replacement
            done.append(_Done(self.line(site.node), old, new, site.subject))
        return edits, done


class _Rewrite(NamedTuple):
    source: str
    description: str
    done: tuple[_Done, ...] = ()  # the numbers changed, in line order


def _rewritten(src: _Source, header: str, edits: dict[int, Edit], done: list[_Done]) -> _Rewrite | None:
    """The rewrite that changes the numbers in `done`, described under `header`; None if none."""
    if not done:
        return None
    ordered = tuple(sorted(done, key=lambda item: item.line))
    description = f"{header} " + ", ".join(item.text() for item in ordered)
    return _Rewrite(src.rewrite(edits), description, ordered)


SourceTweak = Callable[[_Source], _Rewrite | None]


# --- layout helpers: inserting into bracketed lists without losing comments -----------------


def _split_separator(
    separator: cst.BaseParenthesizableWhitespace,
) -> tuple[cst.BaseParenthesizableWhitespace, cst.BaseParenthesizableWhitespace]:
    """The whitespace between two items, split for an item inserted between them: the trailing
    comment stays with the item before, comment lines stay above the item after."""
    if isinstance(separator, cst.ParenthesizedWhitespace):
        return (
            separator.with_changes(empty_lines=()),
            separator.with_changes(first_line=cst.TrailingWhitespace()),
        )
    return separator, cst.SimpleWhitespace(" ")


def _insert_element(node: cst.List, index: int, value: cst.BaseExpression) -> cst.List:
    elements = list(node.elements)
    if index == 0:
        before, after = _split_separator(node.lbracket.whitespace_after)
        node = node.with_changes(lbracket=node.lbracket.with_changes(whitespace_after=before))
    else:
        previous = elements[index - 1]
        before, after = _split_separator(previous.comma.whitespace_after)
        elements[index - 1] = previous.with_changes(
            comma=previous.comma.with_changes(whitespace_after=before))
    elements.insert(index, cst.Element(value, comma=cst.Comma(whitespace_after=after)))
    return node.with_changes(elements=elements)


def _with_keyword(call: cst.Call, name: str, value: str) -> cst.Call:
    """`call` with `name=value` appended, in the call's own layout: one argument per line stays
    so, and a comment after the last argument stays on that argument's line."""
    new = cst.Arg(
        cst.parse_expression(value), keyword=cst.Name(name),
        equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")),
    )
    args = list(call.args)
    if not args:
        return call.with_changes(args=[new])
    last = args[-1]
    separator = args[-2].comma.whitespace_after if len(args) > 1 else call.whitespace_before_args
    trailing_comma = isinstance(last.comma, cst.Comma)
    # the whitespace that ends the argument list: after the trailing comma, else after the argument
    closing = last.comma.whitespace_after if trailing_comma else last.whitespace_after_arg
    one_per_line = isinstance(separator, cst.ParenthesizedWhitespace)
    if one_per_line and isinstance(closing, cst.ParenthesizedWhitespace):
        after_last = separator.with_changes(first_line=closing.first_line, empty_lines=())
        args[-1] = last.with_changes(
            comma=cst.Comma(whitespace_after=after_last), whitespace_after_arg=cst.SimpleWhitespace(""))
        closing = closing.with_changes(first_line=cst.TrailingWhitespace())
        new = new.with_changes(comma=cst.Comma(whitespace_after=closing)) if trailing_comma else (
            new.with_changes(whitespace_after_arg=closing))
    else:
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        new = new.with_changes(comma=last.comma) if trailing_comma else new
    return call.with_changes(args=[*args, new])


# --- Keras tweaks ---------------------------------------------------------------------------


def _is_dense(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Call) and _callee(node) == "Dense"


def _units_node(dense: cst.Call) -> cst.Integer | None:
    arg = _keyword(dense, "units") or next(iter(_positional(dense)), None)
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


def _dense_layers(src: _Source) -> list[_DenseLayer]:
    """The recognised Dense layers, in source order."""
    found: list[_DenseLayer] = []
    for node in src.nodes:
        if isinstance(node, cst.Call) and _callee(node) == "Sequential":
            arg = _keyword(node, "layers") or next(iter(_positional(node)), None)
            if arg and isinstance(arg.value, cst.List):
                listed = arg.value
                for index, element in enumerate(listed.elements):
                    if _is_dense(element.value):
                        found.append(_DenseLayer(
                            element.value, id(listed), listed,
                            lambda updated, code, index=index: _insert_element(
                                updated, index, cst.parse_expression(code)),
                            listed.elements[index - 1].value if index else None))
        elif isinstance(node, (cst.Module, cst.IndentedBlock)):
            for previous, statement in zip([None, *node.body], node.body):
                found.extend(_statement_dense_layer(src, statement, _statement_layer(previous)))
    return sorted(found, key=lambda layer: src.start(layer.dense))


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
    src: _Source, statement: cst.CSTNode, previous: cst.Call | None,
) -> list[_DenseLayer]:
    layer = _statement_layer(statement)
    if layer is None or not _is_dense(layer):
        return []
    small = statement.body[0]

    def insert_statement(code_for: Callable[[str], str]) -> Callable[[Any, str], Any]:
        return lambda updated, code: cst.FlattenSentinel([cst.parse_statement(code_for(code)), updated])

    if isinstance(small, cst.Expr):  # model.add(Dense(...))
        receiver = src.code(small.value.func.value)
        new_statement = insert_statement(lambda code: f"{receiver}.add({code})\n")
        return [_DenseLayer(layer, ("add", receiver), statement, new_statement, previous)]
    source_name = small.value.args[0].value.value  # y = Dense(...)(x)
    new_statement = insert_statement(lambda code: f"{source_name} = {code}({source_name})\n")
    return [_DenseLayer(layer, ("functional",), statement, new_statement, previous)]


def _add_dense(src: _Source) -> _Rewrite | None:
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
    return _Rewrite(new_source, f"add Dense({width}, relu) before the output layer (line {line})")


def _widen_dense(src: _Source) -> _Rewrite | None:
    """The narrowest hidden Dense layer with a literal width gets twice that width, or the
    output's width when that is more (a bottleneck narrower than the output loses information)."""
    layers = _dense_layers(src)
    outputs = {layer.group: layer for layer in layers}  # the last one of each group
    hidden = [layer for layer in layers if layer is not outputs[layer.group] and _units(layer.dense)]
    if not hidden:
        return None
    narrowest = min(hidden, key=lambda layer: _units(layer.dense))
    units = _units(narrowest.dense)
    width = max(2 * units, _units(outputs[narrowest.group].dense) or 0)
    site = _Site(_units_node(narrowest.dense), "Dense")
    return _rewritten(src, "widen", *src.change_sites([site], lambda _old: width))


_KERAS_LAYER_MODULES = ("keras.layers", "tensorflow.keras.layers")


def _import_dropout(src: _Source) -> dict[int, Edit] | None:
    """The edit that makes a bare `Dropout` importable: none when it already is, `Dropout` added
    to the `from … import Dense`; None when Dense is not imported that way."""
    dense_import: tuple[cst.ImportFrom, int] | None = None
    for node in src.nodes:
        if not (isinstance(node, cst.ImportFrom) and not node.relative and node.module is not None
                and _cst_dotted(node.module) in _KERAS_LAYER_MODULES):
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

    def add(updated: cst.ImportFrom) -> cst.ImportFrom:
        names = list(updated.names)
        dense = names[index]
        names[index:index + 1] = [
            dense.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))),
            cst.ImportAlias(cst.Name("Dropout"), comma=dense.comma),
        ]
        return updated.with_changes(names=names)

    return {id(statement): add}


def _add_dropout(src: _Source) -> _Rewrite | None:
    layers = _dense_layers(src)
    if not layers:
        return None
    output = layers[-1]
    if isinstance(output.previous, cst.Call) and _callee(output.previous) == "Dropout":
        return None
    func = output.dense.func
    if isinstance(func, cst.Attribute):  # layers.Dense -> layers.Dropout
        edits, dropout = {}, f"{src.code(func.value)}.Dropout(0.3)"
    elif (edits := _import_dropout(src)) is not None:
        dropout = "Dropout(0.3)"
    else:
        return None
    edits[id(output.anchor)] = lambda updated: output.insert(updated, dropout)
    line = src.line(output.dense)
    return _Rewrite(src.rewrite(edits), f"add Dropout(0.3) before the output layer (line {line})")


def _double_epochs(src: _Source) -> _Rewrite | None:
    edits, done = src.change_sites(src.keyword_sites("epochs"), _scale(2, integer=True))
    return _rewritten(src, "double epochs", edits, done)


_INFERENCE_CALLS = frozenset({"predict", "predict_on_batch", "evaluate", "test_on_batch"})


def _change_batch_size(src: _Source, change: Change, header: str) -> _Rewrite | None:
    """Training batch sizes only: an inference batch size does not change what is learnt."""
    edits, done = src.change_sites(src.keyword_sites("batch_size", _INFERENCE_CALLS), change)
    return _rewritten(src, header, edits, done)


def _is_optimizer(call: cst.Call) -> bool:
    return _callee(call) in _OPTIMIZER_CLASSES or ".optimizers." in (_cst_dotted(call.func) or "")


def _imports(src: _Source) -> Iterator[tuple[str, str, str]]:
    """(module, imported name, bound name) for every import; module is "" for `import x`."""
    for node in src.nodes:
        if isinstance(node, cst.Import):
            for alias in node.names:
                name = _cst_dotted(alias.name) or ""
                yield "", name, alias.asname.name.value if alias.asname else name
        elif isinstance(node, cst.ImportFrom) and not node.relative and node.module is not None:
            if isinstance(node.names, cst.ImportStar):
                continue
            module = _cst_dotted(node.module) or ""
            for alias in node.names:
                name = _cst_dotted(alias.name) or ""
                yield module, name, alias.asname.name.value if alias.asname else name


def _optimizer_spelling(src: _Source, class_name: str) -> tuple[str, str | None]:
    """How to spell a Keras optimizer class with this file's imports: (expression, import line to
    add or None). Prefers the class itself, then an `optimizers` module, then keras, then tf."""
    spellings: dict[str, str] = {}
    uses_tensorflow = False
    for module, name, bound in _imports(src):
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


def _last_import_statement(src: _Source) -> cst.SimpleStatementLine | None:
    imports = [
        s for s in src.module.body if isinstance(s, cst.SimpleStatementLine)
        and any(isinstance(small, (cst.Import, cst.ImportFrom)) for small in s.body)
    ]
    return imports[-1] if imports else None


def _uses_keras(src: _Source) -> bool:
    return any((module or name).split(".")[0] in ("keras", "tensorflow") for module, name, _ in _imports(src))


def _change_learning_rate(src: _Source, factor: float, header: str) -> _Rewrite | None:
    """Rates given as numbers (optimizer arguments, `learning_rate=`/`lr=` anywhere, constants
    named like them) are scaled; a Keras optimizer built without a rate, or named by a string
    in compile(), gets its default rate scaled, written out."""
    change = _scale(factor)
    sites = src.keyword_sites("learning_rate") + src.keyword_sites("lr")
    defaults_to_write: list[tuple[cst.Call, str, float]] = []  # (optimizer, class, default rate)
    for call in filter(_is_optimizer, src.calls):
        rate = _keyword(call, "learning_rate", "lr") or next(iter(_positional(call)), None)
        if rate is not None:
            if site := src.site(rate.value):
                sites.append(site)
        elif _callee(call) in _OPTIMIZER_CLASSES and not call.args and _uses_keras(src):
            default = next(r for name, r in OPTIMIZER_DEFAULTS.values() if name == _callee(call))
            defaults_to_write.append((call, _callee(call), default))
    edits, done = src.change_sites(sites, change)
    for call, class_name, default in defaults_to_write:
        text = format_number(change(default))
        edits[id(call)] = lambda updated, text=text: _with_keyword(updated, "learning_rate", text)
        done.append(_Done(src.line(call), default, change(default), f"{class_name} default"))

    import_to_add: str | None = None
    for call in src.calls:
        arg = _keyword(call, "optimizer") or next(iter(_positional(call)), None)
        if _callee(call) != "compile" or not (arg and isinstance(arg.value, cst.SimpleString)):
            continue
        known = OPTIMIZER_DEFAULTS.get(str(arg.value.evaluated_value).lower())
        if known is None:
            continue
        class_name, default = known
        spelling, needed_import = _optimizer_spelling(src, class_name)
        if needed_import and _last_import_statement(src) is None:
            continue  # no import to put ours after: not a Keras script we can safely extend
        import_to_add = import_to_add or needed_import
        text = format_number(change(default))
        replacement = cst.parse_expression(f"{spelling}(learning_rate={text})")
        edits[id(arg.value)] = lambda _updated, replacement=replacement: replacement
        done.append(_Done(src.line(arg.value), default, change(default),
                          note=f", optimizer {src.code(arg.value)} → {spelling}"))
    if import_to_add:
        anchor = _last_import_statement(src)
        edits[id(anchor)] = lambda updated: cst.FlattenSentinel([updated, cst.parse_statement(import_to_add)])
    return _rewritten(src, header, edits, done)


# --- scikit-learn tweaks --------------------------------------------------------------------


def _estimator_keyword(
    src: _Source, keyword: str, defaults: dict[str, int | float], change: Change, header: str,
) -> _Rewrite | None:
    """`keyword=` in estimator constructors (CapWords calls, so also inside Pipeline or
    GridSearchCV) changed; estimators in `defaults` that leave it out get it, from the default."""
    sites: list[_Site] = []
    additions: list[tuple[cst.Call, str, int | float, int | float]] = []
    for call in src.calls:
        estimator = _callee(call)
        if not estimator[:1].isupper():
            continue
        arg = _keyword(call, keyword)
        if arg is not None:
            if site := src.site(arg.value):
                sites.append(_Site(site.node, site.subject or estimator))
        elif estimator in defaults and not any(a.star == "**" for a in call.args):
            if (new := change(defaults[estimator])) is not None:
                additions.append((call, estimator, defaults[estimator], new))
    edits, done = src.change_sites(sites, change)
    for call, estimator, default, new in additions:
        text = format_number(new)
        edits[id(call)] = lambda updated, text=text: _with_keyword(updated, keyword, text)
        done.append(_Done(src.line(call), default, new, f"{estimator} default", f", added {keyword}={text}"))
    return _rewritten(src, header, edits, done)


# --- the registry ---------------------------------------------------------------------------


def _learning_rate_tweak(name: str, factor: float, header: str) -> Tweak:
    return Tweak(name, lambda src: _change_learning_rate(src, factor, header), ("learning_rate", "lr"),
                 _scale(factor))


def _batch_size_tweak(name: str, change: Change, header: str) -> Tweak:
    return Tweak(name, lambda src: _change_batch_size(src, change, header), ("batch_size",), change)


def _estimator_tweak(
    name: str, keyword: str, defaults: dict[str, int | float], change: Change, header: str,
) -> Tweak:
    return Tweak(name, lambda src: _estimator_keyword(src, keyword, defaults, change, header),
                 (keyword.lower(),), change)


TWEAKS: dict[str, Tweak] = {tweak.name: tweak for tweak in (
    Tweak("add_dense", _add_dense, ("dense_layers",), _add_one_layer),
    Tweak("widen_dense", _widen_dense, ("dense_width",), _scale(2, integer=True)),
    Tweak("add_dropout", _add_dropout, ("dropout",), _raise_dropout),
    Tweak("double_epochs", _double_epochs, ("epochs",), _scale(2, integer=True), counts_sites=True),
    _learning_rate_tweak("halve_learning_rate", 0.5, "halve learning rate"),
    _learning_rate_tweak("double_learning_rate", 2, "double learning rate"),
    _learning_rate_tweak("divide_learning_rate_by_10", 0.1, "divide learning rate by 10"),
    _batch_size_tweak("halve_batch_size", _halve_count, "halve batch size"),
    _batch_size_tweak("batch_size_32", _at_most_32, "set batch size"),
    _estimator_tweak("c_times_10", "C", C_DEFAULTS, _scale(10), "C ×10:"),
    _estimator_tweak("c_div_10", "C", C_DEFAULTS, _scale(0.1), "C ÷10:"),
    _estimator_tweak("alpha_div_10", "alpha", ALPHA_DEFAULTS, _scale(0.1), "alpha ÷10:"),
    _estimator_tweak("alpha_times_10", "alpha", ALPHA_DEFAULTS, _scale(10), "alpha ×10:"),
    _estimator_tweak(
        "double_max_iter", "max_iter", MAX_ITER_DEFAULTS, _scale(2, integer=True), "max_iter ×2:"),
    _estimator_tweak(
        "max_iter_times_10", "max_iter", MAX_ITER_DEFAULTS, _scale(10, integer=True), "max_iter ×10:"),
)}
TWEAK_NAMES: tuple[str, ...] = tuple(TWEAKS)


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
            return _apply_to_params(tweak, source, params)
        rewrite = tweak.rewrite(_Source(source))
    except (CannotRewrite, RecursionError):  # too deeply nested to analyse or rewrite: skipped
        return None
    if rewrite is None:
        return None
    old, new = (rewrite.done[0].old, rewrite.done[0].new) if rewrite.done else (None, None)
    sites = len(rewrite.done) if tweak.counts_sites else 0
    return TweakResult(rewrite.source, dict(params), rewrite.description, old, new, sites)
