"""The libcst machinery: a parsed model file, the numbers in it, and rewriting it.

Every rewrite goes through `Source.rewrite`: edits are keyed by the id of the original node, so
formatting and comments everywhere else survive untouched.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from jobs.errors import UserError
from jobs.tune.tweaks.numeric import Change, format_number


class CannotRewrite(UserError):
    """The source is Python, but nested too deeply (or too oddly) to analyse or rewrite: every
    tweak is skipped."""


MAX_DEPTH = 200  # syntax tree levels the rewriter takes (it recurses); real scripts nest a few dozen


def parse(source: str) -> ast.Module:
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


# --- reading nodes --------------------------------------------------------------------------

Edit = Callable[[Any], Any]  # updated node -> its replacement (a node or a FlattenSentinel)


def dotted(node: cst.CSTNode) -> str | None:
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if not isinstance(node, cst.Name):
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


def callee(call: cst.Call) -> str:
    """The last name of what is called: `Dense` for `tf.keras.layers.Dense(...)`."""
    return (dotted(call.func) or "").rsplit(".", 1)[-1]


def keyword(call: cst.Call, *names: str) -> cst.Arg | None:
    return next((a for a in call.args if a.keyword and a.keyword.value in names), None)


def positional(call: cst.Call) -> list[cst.Arg]:
    return [a for a in call.args if a.keyword is None and not a.star]


def number_node(node: cst.BaseExpression) -> cst.Integer | cst.Float | None:
    return node if isinstance(node, (cst.Integer, cst.Float)) else None


@dataclass(frozen=True)
class Site:
    """A numeric literal to change, and how to name it in the description."""

    node: cst.Integer | cst.Float
    subject: str = ""


@dataclass(frozen=True)
class Done:
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


# --- the parsed file --------------------------------------------------------------------------


class Source:
    """A parsed model file: its nodes in source order, their lines, and rewriting."""

    def __init__(self, source: str) -> None:
        # A clear UserError for a syntax error; and libcst never sees a tree deep enough to
        # overflow its native parser's stack (which kills the process, as a 10,000-term `and` does).
        if _depth(parse(source)) > MAX_DEPTH:
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
            name: node for name, value in bound.items()
            if counts[name] == 1 and value is not None and (node := number_node(value)) is not None
        }

    def uses(self, name: str) -> int:
        return sum(1 for node in self.nodes if isinstance(node, cst.Name) and node.value == name)

    def site(self, value: cst.BaseExpression) -> Site | None:
        """The literal behind a value: the value itself, or the module constant it names."""
        if node := number_node(value):
            return Site(node)
        if isinstance(value, cst.Name) and value.value in self.constants:
            return Site(self.constants[value.value], value.value)
        return None

    def keyword_sites(self, name: str, skip_calls: frozenset[str] = frozenset()) -> list[Site]:
        """`name=<number>` in calls (except to `skip_calls`) and function defaults, and used
        module constants spelled NAME or *_NAME (`EPOCHS`, `NUM_EPOCHS`), even when used another
        way (`range(EPOCHS)`)."""
        sites = [
            s for c in self.calls
            if callee(c) not in skip_calls and (a := keyword(c, name)) and (s := self.site(a.value))
        ]
        sites += [
            s for node in self.nodes
            if isinstance(node, cst.Param) and node.name.value == name and node.default
            and (s := self.site(node.default))
        ]
        sites += [
            Site(literal, constant) for constant, literal in self.constants.items()
            if (constant.upper() == name.upper() or constant.upper().endswith(f"_{name.upper()}"))
            and self.uses(constant) > 1
        ]
        return sites

    def change_sites(self, sites: list[Site], change: Change) -> tuple[dict[int, Edit], list[Done]]:
        edits: dict[int, Edit] = {}
        done: list[Done] = []
        for site in sites:
            old = site.node.evaluated_value
            new = change(old)
            if id(site.node) in edits or new is None or new == old:
                continue
            edits[id(site.node)] = replace_with(format_number(new))
            done.append(Done(self.line(site.node), old, new, site.subject))
        return edits, done

    def imports(self) -> Iterator[tuple[str, str, str]]:
        """(module, imported name, bound name) for every import; module is "" for `import x`."""
        for node in self.nodes:
            if isinstance(node, cst.Import):
                for alias in node.names:
                    name = dotted(alias.name) or ""
                    yield "", name, alias.evaluated_alias or name
            elif isinstance(node, cst.ImportFrom) and not node.relative and node.module is not None:
                if isinstance(node.names, cst.ImportStar):
                    continue
                module = dotted(node.module) or ""
                for alias in node.names:
                    name = dotted(alias.name) or ""
                    yield module, name, alias.evaluated_alias or name

    def last_import_statement(self) -> cst.SimpleStatementLine | None:
        imports = [
            s for s in self.module.body if isinstance(s, cst.SimpleStatementLine)
            and any(isinstance(small, (cst.Import, cst.ImportFrom)) for small in s.body)
        ]
        return imports[-1] if imports else None


def replace_with(code: str) -> Edit:
    """The edit that replaces a node by the expression `code`."""
    replacement = cst.parse_expression(code)
    return lambda _updated: replacement


# --- the result of a rewrite ------------------------------------------------------------------


class Rewrite(NamedTuple):
    source: str
    description: str
    done: tuple[Done, ...] = ()  # the numbers changed, in line order


def rewritten(src: Source, header: str, edits: dict[int, Edit], done: list[Done]) -> Rewrite | None:
    """The rewrite that changes the numbers in `done`, described under `header`; None if none."""
    if not done:
        return None
    ordered = tuple(sorted(done, key=lambda item: item.line))
    description = f"{header} " + ", ".join(item.text() for item in ordered)
    return Rewrite(src.rewrite(edits), description, ordered)


SourceTweak = Callable[[Source], "Rewrite | None"]
