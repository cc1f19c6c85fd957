"""Inserting into bracketed lists and argument lists without losing comments or layout."""

from __future__ import annotations

import libcst as cst


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


def _plain(separator: cst.BaseParenthesizableWhitespace) -> cst.BaseParenthesizableWhitespace:
    """The separator without its comments: a new line and indent, or a space."""
    if isinstance(separator, cst.ParenthesizedWhitespace):
        return separator.with_changes(first_line=cst.TrailingWhitespace(), empty_lines=())
    return cst.SimpleWhitespace(" ")


def _comma(item: cst.BaseElement | cst.Arg) -> cst.Comma:
    """The comma after an item that another follows (libcst types it Comma | MaybeSentinel)."""
    assert isinstance(item.comma, cst.Comma), "an item followed by another has a comma"
    return item.comma


def insert_element(node: cst.List, index: int, value: cst.BaseExpression) -> cst.List:
    elements = list(node.elements)
    if index == 0:
        before, after = _split_separator(node.lbracket.whitespace_after)
        node = node.with_changes(lbracket=node.lbracket.with_changes(whitespace_after=before))
    else:
        previous = elements[index - 1]
        before, after = _split_separator(_comma(previous).whitespace_after)
        elements[index - 1] = previous.with_changes(
            comma=_comma(previous).with_changes(whitespace_after=before))
    elements.insert(index, cst.Element(value, comma=cst.Comma(whitespace_after=after)))
    return node.with_changes(elements=elements)


def insert_args(call: cst.Call, index: int, values: list[cst.BaseExpression]) -> cst.Call:
    """`call` with positional `values` inserted before its argument `index` (not the end), each
    on its own line when the arguments are one per line."""
    args = list(call.args)
    if index == 0:
        before, after = _split_separator(call.whitespace_before_args)
        call = call.with_changes(whitespace_before_args=before)
    else:
        previous = args[index - 1]
        before, after = _split_separator(_comma(previous).whitespace_after)
        args[index - 1] = previous.with_changes(comma=_comma(previous).with_changes(whitespace_after=before))
    separators = [_plain(after)] * (len(values) - 1) + [after]
    args[index:index] = [cst.Arg(value, comma=cst.Comma(whitespace_after=separator))
                         for value, separator in zip(values, separators, strict=True)]
    return call.with_changes(args=args)


def without_args(call: cst.Call, drop: list[cst.Arg]) -> cst.Call:
    """`call` without the arguments in `drop` (compared by identity); the arguments left keep
    their layout, and the call keeps (or goes without) its trailing comma."""
    args = list(call.args)
    kept = [arg for arg in args if not any(arg is gone for gone in drop)]
    if kept and kept[-1] is not args[-1]:  # the last argument went: its successor ends the list
        kept[-1] = kept[-1].with_changes(comma=args[-1].comma,
                                         whitespace_after_arg=args[-1].whitespace_after_arg)
    return call.with_changes(args=kept)


def with_keyword(call: cst.Call, name: str, value: str) -> cst.Call:
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
    separator = _comma(args[-2]).whitespace_after if len(args) > 1 else call.whitespace_before_args
    trailing_comma = last.comma if isinstance(last.comma, cst.Comma) else None
    # the whitespace that ends the argument list: after the trailing comma, else after the argument
    closing = trailing_comma.whitespace_after if trailing_comma is not None else last.whitespace_after_arg
    one_per_line = isinstance(separator, cst.ParenthesizedWhitespace)
    if one_per_line and isinstance(closing, cst.ParenthesizedWhitespace):
        after_last = separator.with_changes(first_line=closing.first_line, empty_lines=())
        args[-1] = last.with_changes(
            comma=cst.Comma(whitespace_after=after_last), whitespace_after_arg=cst.SimpleWhitespace(""))
        closing = closing.with_changes(first_line=cst.TrailingWhitespace())
        new = new.with_changes(comma=cst.Comma(whitespace_after=closing)) if trailing_comma is not None else (
            new.with_changes(whitespace_after_arg=closing))
    else:
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        new = new.with_changes(comma=trailing_comma) if trailing_comma is not None else new
    return call.with_changes(args=[*args, new])


def add_import_name(statement: cst.ImportFrom, index: int, name: str) -> cst.ImportFrom:
    """`from m import a, b` with `name` imported right after its alias `index`."""
    assert not isinstance(statement.names, cst.ImportStar), "a star import has no aliases"
    names = list(statement.names)
    names[index:index + 1] = [
        names[index].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))),
        cst.ImportAlias(cst.Name(name), comma=names[index].comma),
    ]
    return statement.with_changes(names=names)
