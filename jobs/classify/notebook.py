"""A notebook (`.ipynb`) or a notebook export (`.py`) as the plain Python its code cells run.

`code_of(path_or_text)` is the one entry point. The classifier reads its `source`; whatever runs or
tweaks a notebook must read the same text, so both agree on what the model file is.

What counts as code, as IPython would run it:
- a code cell's lines, except IPython-only lines: line magics (`%matplotlib inline`), shell lines
  (`!pip install …`, `files = !ls`) and help lines (`obj?`). Each becomes the comment
  `# ipython: <the line>` (`...  # ipython: <the line>` when indented, so a block keeps a body),
  so every line keeps its number. A cell that parses as it is is left as it is;
- under a cell magic that runs its body as Python (`%%time`, `%%timeit`, `%%capture`, `%%prun`):
  the body (the magic line becomes such a comment); under any other cell magic (`%%bash`,
  `%%writefile`, `%%html`…): nothing, the cell is left out (with a note);
- in an exported script: `get_ipython().run_cell_magic(name, line, body)` with such a magic is
  replaced by its body (read as a cell); `get_ipython().system(…)`, `.getoutput(…)`,
  `.run_line_magic(…)`, `.magic(…)` statements and other cell magics become comments.

A notebook's `source` is its non-empty code cells in order, each after a marker line
`# %% pushtune cell N`, where N = index + 1 is the cell's position in the notebook (markdown cells
count). `NotebookCode.split(rewritten)` cuts a rewritten source back into cells at those markers
and restores the IPython lines, so a tweaked source can be put back into the notebook (lines a
rewrite inserts may shift the rest: the restoring aligns lines, it does not count them).
"""

from __future__ import annotations

import ast
import copy
import difflib
import io
import os
import re
import tokenize
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.errors import UserError

PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})  # run their body as Python
IPYTHON_METHODS = frozenset({"system", "getoutput", "run_line_magic", "magic", "run_cell_magic"})
COMMENT = "# ipython: "
CELL_MARKER = "# %% pushtune cell {}"
_MARKER_LINE = re.compile(r"# %% pushtune cell (\d+)")
_LINE_REFERENCE = re.compile(r"\(line (\d+)")  # as the tweaks name a line: "(line 12)", "(line 12, …)"

# A line IPython reads and Python cannot: a magic, a shell escape, `x = !cmd`, `obj?` / `?obj`.
_IPYTHON_LINE = re.compile(r"^[ \t]*(?:[!%?]|[A-Za-z_][\w.]*[ \t]*=[ \t]*[!%])|\?\??[ \t]*$")
_MAYBE_IPYTHON = re.compile(r"^[ \t]*[!%?]|^[ \t]*[A-Za-z_][\w.]*[ \t]*=[ \t]*[!%]|\?[ \t]*$", re.M)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


class NotebookError(UserError):
    """Not a notebook pushtune reads (not JSON, not nbformat 4, not Python); the message says why."""


@dataclass(frozen=True)
class NotebookCode:
    """The Python a notebook or script runs.

    - `source`: the Python text (for a notebook, its code cells after their markers);
    - `origins[n - 1]`: where source line n comes from, as (cell index, line in cell). Cell index
      is the 0-based index in the notebook's `cells` (a marker line has line 0); for a script it
      is 0 and the line is the file's line (all lines of an expanded `run_cell_magic` body map to
      the line of the call);
    - `cells`: the notebook indices of the code cells in `source`, in order (`(0,)` for a script);
    - `notes`: what was left out, for the attempt's log ("cell 1, line 1: shell line skipped …");
    - `notebook`: the nbformat NotebookNode read (None for a script).
    """

    source: str
    origins: tuple[tuple[int, int], ...]
    cells: tuple[int, ...]
    is_notebook: bool
    notes: tuple[str, ...] = ()
    notebook: Any = field(default=None, compare=False, repr=False)
    # per entry of `cells`: its lines as written and as Python (each ending in a newline), and
    # whether the cell's text ended in one
    cell_lines: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = field(default=(), compare=False, repr=False)
    trailing_newline: tuple[bool, ...] = field(default=(), compare=False, repr=False)

    def origin(self, line: int) -> tuple[int, int]:
        """(cell index, line in cell) of a source line (1-based). A line past the end (where a
        syntax error at the end of the text is reported) continues the last cell."""
        if not self.origins:
            return (self.cells[0] if self.cells else 0, max(line, 1))
        if line > len(self.origins):
            cell, last = self.origins[-1]
            return cell, last + line - len(self.origins)
        return self.origins[max(line, 1) - 1]

    def where(self, line: int) -> str:
        """A source line as a person finds it: "cell 4, line 2" in a notebook, "line 7" in a script."""
        cell, in_cell = self.origin(line)
        return f"cell {cell + 1}, line {max(in_cell, 1)}" if self.is_notebook else f"line {in_cell}"

    def split(self, source: str) -> dict[int, str]:
        """A (rewritten) notebook source back into cells: {notebook cell index: cell source}, with
        the IPython lines restored. A script gives {0: source}. ValueError if a marker is lost."""
        if not self.is_notebook:
            return {0: source}
        chunks: list[list[str]] = []
        before: list[str] = []  # lines a rewrite put above the first marker go to the first cell
        expected = iter(self.cells)
        want = next(expected, None)
        for line in _lines(source):
            if want is not None and line.rstrip("\r\n") == CELL_MARKER.format(want + 1):
                chunks.append(before if not chunks else [])
                want = next(expected, None)
            else:
                (chunks[-1] if chunks else before).append(line)
        if want is not None or len(chunks) != len(self.cells):
            raise ValueError(f"the marker of cell {(want or 0) + 1} is missing from the source")
        cells: dict[int, str] = {}
        for number, (index, chunk) in enumerate(zip(self.cells, chunks, strict=True)):
            written, python = self.cell_lines[number]
            text = "".join(_restored(chunk, written, python))
            cells[index] = text if self.trailing_newline[number] else text.removesuffix("\n")
        return cells

    # --- running, tweaking and handing back a notebook (see also the module functions below) ---

    def locate(self, source: str, line: int) -> str | None:
        """Where line `line` of `source` (this notebook's source, or a rewrite of it) is, as
        `where` says it: "cell 4, line 2". The pushed source is read through `origins`; a rewrite
        (whose inserted lines shift the rest) by the cell marker above the line. None for a
        script, a marker line or a line above the first marker."""
        if not self.is_notebook or line < 1:
            return None
        if source == self.source:
            return self.where(line) if line <= len(self.origins) and self.origin(line)[1] else None
        found = _marked_cell(source, line)
        return None if found is None else f"cell {found[0]}, line {found[1]}"

    def name_cells(self, text: str | None, source: str) -> str | None:
        """A tweak's description with each "(line N" of `source` named as "(cell K, line M":
        `halve learning rate 8 → 4 (line 12)` → `… (cell 4, line 2)`. A script's is unchanged."""
        if not text or not self.is_notebook:
            return text

        def named(match: re.Match[str]) -> str:
            where = self.locate(source, int(match.group(1)))
            return f"({where}" if where else match.group(0)

        return _LINE_REFERENCE.sub(named, text)

    def diff(self, old: str, new: str, name: str) -> str:
        """The unified diff from `old` to `new` (this notebook's source or rewrites of it): for a
        notebook one per changed code cell, headed `a/NAME (cell K)`, in the cell's own lines (its
        IPython lines as written); for a script, or sources whose markers are lost, one diff of
        the whole text."""
        if self.is_notebook:
            try:
                before, after = self.split(old), self.split(new)
            except ValueError:
                pass
            else:
                parts: list[str] = []
                for index in self.cells:
                    if before[index] != after[index]:
                        label = f"{name} (cell {index + 1})"
                        parts.extend(difflib.unified_diff(_diff_lines(before[index]), _diff_lines(after[index]),
                                                          f"a/{label}", f"b/{label}"))
                return "".join(parts)
        return "".join(difflib.unified_diff(_diff_lines(old), _diff_lines(new), f"a/{name}", f"b/{name}"))

    def rebuilt(self, source: str) -> Any:
        """The notebook with its code cells' text taken from `source` (this notebook's source,
        rewritten or not; IPython lines restored), every other cell kept in its place, and every
        output and execution count cleared: what a person opens to see exactly what ran.
        ValueError when `source` lost a cell marker; NotebookError for a script."""
        if not self.is_notebook or self.notebook is None:
            raise NotebookError("a script has no notebook to rebuild")
        nb = copy.deepcopy(self.notebook)
        for index, text in self.split(source).items():
            nb.cells[index]["source"] = text
        return output_free(nb)


def _marked_cell(source: str, line: int) -> tuple[int, int] | None:
    """(cell number as people count it, line in that cell) of line `line` of a notebook source,
    found by the last `# %% pushtune cell N` marker above it; None on or above the first marker."""
    cell, start = None, 0
    for number, text in enumerate(_lines(source)[:line], 1):
        match = _MARKER_LINE.fullmatch(text.rstrip("\r\n"))
        if match:
            cell, start = int(match.group(1)), number
    if cell is None or line <= start:
        return None
    return cell, line - start


def _diff_lines(text: str) -> list[str]:
    """Lines for difflib, each ending in a newline (a last line without one gets one)."""
    return [line if line.endswith(("\n", "\r")) else line + "\n" for line in _lines(text)]


def output_free(nb: Any) -> Any:
    """The notebook (changed in place and returned) without outputs or execution counts, repaired
    where nbformat's own normalizing can (missing cell ids, metadata of the wrong type) and where
    a cell lacks a key the schema requires, so that it validates."""
    # nbformat (0.1 s to import, with jsonschema): only when a notebook is read
    import nbformat
    from nbformat.validator import normalize

    nb.setdefault("metadata", {})
    for cell in nb.cells:
        cell.setdefault("metadata", {})
        if not isinstance(cell.get("source"), str):
            cell["source"] = "".join(cell.get("source") or [])
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    with warnings.catch_warnings():  # nbformat warns about what it repairs
        warnings.simplefilter("ignore")
        _, repaired = normalize(nb, strip_invalid_metadata=True)
    return nbformat.from_dict(repaired)


def notebook_problem(nb: Any) -> str | None:
    """Why the notebook does not validate against its nbformat schema, or None when it does."""
    # nbformat (0.1 s to import, with jsonschema): only when a notebook is read
    import nbformat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nbformat.validate(copy.deepcopy(nb))
        except nbformat.ValidationError as exc:
            return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def handed_back_notebook(run: dict[str, Any], attempt: dict[str, Any]) -> Path | None:
    """Where a notebook run hands an attempt's notebook (its model.ipynb) back: next to the
    attempt's model artifact (in its output directory when it saved none), named as the pushed
    notebook. None for a script run. (The copy is jobs.loop.hand_back_notebook's.)"""
    name = run.get("model_name") or ""
    if not name.lower().endswith(".ipynb") or not attempt.get("dir"):
        return None
    artifact = attempt.get("artifact_path")
    folder = Path(artifact).parent if artifact else Path(attempt["dir"]) / "output"
    return folder / Path(name).name


def notebook_json(nb: Any) -> str:
    """The notebook as its file's text (nbformat's JSON, ending in a newline)."""
    # nbformat (0.1 s to import, with jsonschema): only when a notebook is read
    import nbformat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def code_of(path_or_text: str | os.PathLike[str], *, notebook: bool | None = None) -> NotebookCode:
    """The Python a notebook or a script runs. A path (any os.PathLike) is read, and is a notebook
    when it ends in `.ipynb`; a str is the text itself, a notebook when `notebook` says so or,
    left None, when it looks like notebook JSON. NotebookError for a notebook pushtune cannot
    read (or a file it cannot decode)."""
    if isinstance(path_or_text, os.PathLike):
        path = os.fspath(path_or_text)
        with open(path, "rb") as handle:
            data = handle.read()
        if notebook is None:
            notebook = path.lower().endswith(".ipynb")
        text = decode_notebook(data) if notebook else _decode_script(data)
    else:
        text = path_or_text
        if notebook is None:
            notebook = looks_like_notebook(text)
    return notebook_code(text) if notebook else script_code(text)


def looks_like_notebook(text: str) -> bool:
    head = text.lstrip("\ufeff \t\r\n")[:1]
    return head == "{" and '"cells"' in text and '"nbformat"' in text


def decode_notebook(data: bytes) -> str:
    if b"\x00" in data:
        raise NotebookError("notebook is not valid JSON (binary content)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotebookError("notebook is not valid JSON (not UTF-8 text)") from None


def _decode_script(data: bytes) -> str:
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise NotebookError(f"cannot decode the script: {exc}") from None


# --- notebooks ----------------------------------------------------------------------------------


def read_notebook(text: str) -> Any:
    """The nbformat 4 notebook in `text` (a NotebookNode), or NotebookError saying which check
    failed: not valid JSON, not nbformat 4, or not shaped like a notebook. The nbformat schema is
    not enforced beyond that: notebooks from Colab, Kaggle or editors often bend it harmlessly."""
    try:  # imported here: scripts are read (and jobs.classify.classifier imported) without nbformat
        # nbformat (0.1 s to import, with jsonschema): only when a notebook is read
        import nbformat
        from nbformat.reader import NotJSONError, parse_json
    except ImportError:
        raise NotebookError("reading a notebook needs nbformat (pip install nbformat)") from None
    try:
        data = parse_json(text.removeprefix("\ufeff"))
    except NotJSONError as exc:
        cause = exc.__cause__
        if not text.strip():
            detail = "empty file"
        elif isinstance(cause, ValueError) and hasattr(cause, "lineno"):
            detail = f"line {cause.lineno}, column {cause.colno}: {cause.msg}"  # type: ignore[attr-defined]
        else:
            detail = str(cause or exc)
        raise NotebookError(f"notebook is not valid JSON ({detail})") from None
    except RecursionError:
        raise NotebookError("notebook is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise NotebookError(f"not an nbformat 4 notebook (the JSON is {_json_kind(data)}, not an object)")
    version = data.get("nbformat")
    if version != 4 or isinstance(version, bool):
        which = "no nbformat version" if version is None else f"nbformat {version!r}"
        raise NotebookError(f"not an nbformat 4 notebook ({which})")
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise NotebookError("not a valid nbformat 4 notebook (no list of cells)")
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise NotebookError(f"not a valid nbformat 4 notebook (cell {number} has no cell_type)")
        source = cell.get("source", "")
        if not isinstance(source, str) and not (isinstance(source, list) and all(isinstance(s, str) for s in source)):
            raise NotebookError(f"not a valid nbformat 4 notebook (cell {number} has no source text)")
    try:
        nb = nbformat.from_dict(data)
    except RecursionError:
        raise NotebookError("not a valid nbformat 4 notebook (nested too deeply)") from None
    for cell in nb.cells:
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
    return nb


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def notebook_language(nb: Any) -> str:
    """The notebook's kernel language, lower case ("python" when it does not say)."""
    metadata = nb.get("metadata") if isinstance(nb.get("metadata"), dict) else {}
    for key, name in (("kernelspec", "language"), ("language_info", "name")):
        section = metadata.get(key)
        if isinstance(section, dict) and isinstance(section.get(name), str) and section[name].strip():
            return section[name].strip().lower()
    return "python"


def notebook_code(text: str) -> NotebookCode:
    """The Python of a notebook's code cells (NotebookError if it is not a Python nbformat 4 one)."""
    nb = read_notebook(text)
    language = notebook_language(nb)
    if language not in ("python", "python3", "python2", "ipython", "ipython3"):
        raise NotebookError(f"notebook language is {language}, not Python")
    parts: list[str] = []
    origins: list[tuple[int, int]] = []
    cells: list[int] = []
    notes: list[str] = []
    originals: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    newlines: list[bool] = []
    for index, cell in enumerate(nb.cells):
        source = cell.get("source", "")
        if cell.get("cell_type") != "code" or not source.strip():
            continue
        source = source.replace("\r\n", "\n").replace("\r", "\n")
        converted = convert_cell(source)
        label = f"cell {index + 1}"
        if converted.magic is not None:
            notes.append(f"{label}: %%{converted.magic} cell left out (not Python)")
            continue
        notes.extend(f"{label}, {note}" for note in converted.notes)
        parts.append(CELL_MARKER.format(index + 1) + "\n")
        origins.append((index, 0))
        lines = converted.lines
        if lines and not lines[-1].endswith("\n"):
            lines = [*lines[:-1], lines[-1] + "\n"]
        parts.extend(lines)
        origins.extend((index, number) for number in range(1, len(lines) + 1))
        cells.append(index)
        written = _lines(source if source.endswith("\n") else source + "\n")
        originals.append((tuple(written), tuple(lines)))
        newlines.append(source.endswith("\n"))
    return NotebookCode("".join(parts), tuple(origins), tuple(cells), True, tuple(notes), nb,
                        tuple(originals), tuple(newlines))


@dataclass
class Cell:
    """A cell's text as Python: its lines (as many as the cell's) and notes on what was left out;
    `magic` names a non-Python cell magic (then the cell is not code)."""

    lines: list[str]
    notes: list[str] = field(default_factory=list)
    magic: str | None = None


def convert_cell(text: str) -> Cell:
    """One code cell (IPython text) as Python, line for line."""
    lines = _lines(text)
    cell = Cell(list(lines))
    start = 0
    while True:  # cell magics: `%%capture` over `%%time` over the body …
        first = next((n for n in range(start, len(lines)) if lines[n].strip()), None)
        if first is None or not lines[first].startswith("%%"):
            break
        name = (lines[first][2:].split() or [""])[0]
        if name not in PYTHON_CELL_MAGICS:
            cell.magic = name or "%"
            return cell
        _comment_into(cell, first, lines[first])
        cell.notes.append(f"line {first + 1}: %%{name} runs its body")
        start = first + 1
    if _parses("".join(cell.lines)):
        return cell
    inside_strings = _string_interiors("".join(cell.lines))
    continued = False
    for number in range(start, len(lines)):
        line = lines[number]
        if continued or (number + 1 not in inside_strings and _is_ipython_line(line)):
            _comment_into(cell, number, line, continuation=continued)
            if not continued:
                cell.notes.append(f"line {number + 1}: {_what(line)} skipped ({line.strip()[:60]})")
            continued = line.rstrip("\r\n").endswith("\\")
    return cell


def _is_ipython_line(line: str) -> bool:
    return not line.lstrip().startswith("#") and bool(_IPYTHON_LINE.search(line.rstrip("\r\n")))


def _what(line: str) -> str:
    stripped = line.strip()
    if stripped.startswith("!") or re.match(r"[\w.]+\s*=\s*!", stripped):
        return "shell line"
    if stripped.startswith("%"):
        return "magic"
    return "help line"


def _comment_into(cell: Cell, number: int, line: str, continuation: bool = False) -> None:
    cell.lines[number] = commented(line, continuation)


def commented(line: str, continuation: bool = False) -> str:
    """An IPython line as the comment that keeps its place (and a block's body, when indented)."""
    body = line.rstrip("\r\n")
    ending = line[len(body):]
    stripped = body.lstrip(" \t")
    indent = body[: len(body) - len(stripped)]
    filler = "...  " if indent and not continuation else ""
    return f"{indent}{filler}{COMMENT}{stripped}{ending}"


def _restored(chunk: list[str], written: tuple[str, ...], python: tuple[str, ...]) -> list[str]:
    """A cell's rewritten lines with its IPython lines back: every line the rewrite kept (found by
    aligning it with the cell's Python lines, so inserted or removed lines do not matter) that was
    an IPython line becomes that line again."""
    restored = list(chunk)
    matcher = difflib.SequenceMatcher(None, python, chunk, autojunk=False)
    for start, at, size in matcher.get_matching_blocks():
        for offset in range(size):
            if python[start + offset] != written[start + offset]:
                restored[at + offset] = written[start + offset]
    return restored


# --- scripts (notebook exports) -----------------------------------------------------------------


def script_code(text: str) -> NotebookCode:
    """A `.py` file as Python: raw IPython lines commented out when the file does not parse
    without that, `get_ipython()` statements expanded or commented out."""
    lines = _lines(text)
    origins = [(0, number) for number in range(1, len(lines) + 1)]
    notes: list[str] = []
    if "get_ipython" not in text and _parses(text):
        return NotebookCode(text, tuple(origins), (0,), False)
    if _MAYBE_IPYTHON.search(text) and not _parses(text):
        cell = convert_cell(text)
        if cell.magic is None:
            lines, notes = cell.lines, cell.notes
        else:  # `%%bash` at the top of a script: every line is the magic's
            notes.append(f"%%{cell.magic} file: not Python")
    if "get_ipython" in text:
        tree = _try_parse("".join(lines))
        if tree is not None:
            lines, origins = _expand_get_ipython(tree, lines, origins, notes)
    return NotebookCode("".join(lines), tuple(origins), (0,), False, tuple(notes))


def _expand_get_ipython(
    tree: ast.Module, lines: list[str], origins: list[tuple[int, int]], notes: list[str],
) -> tuple[list[str], list[tuple[int, int]]]:
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Expr) and _ipython_method(node.value)]
    found: list[tuple[int, list[str]]] = []  # (line, its notes): the statements are done bottom up
    for statement in sorted(calls, key=lambda node: node.lineno, reverse=True):
        first, last = statement.lineno - 1, (statement.end_lineno or statement.lineno) - 1
        if not _alone_on_its_lines(statement, lines):
            continue
        call = statement.value
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
        method = call.func.attr
        where = origins[first][1]
        replacement: list[str] | None = None
        said: list[str] = []
        found.append((where, said))
        if method == "run_cell_magic":
            name, body = (_literal(call.args[i]) if len(call.args) > i else None for i in (0, 2))
            if isinstance(name, str) and name in PYTHON_CELL_MAGICS and isinstance(body, str):
                cell = convert_cell(body)
                if cell.magic is None:
                    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip(" \t"))]
                    replacement = [indent + line for line in cell.lines] or [indent + "\n"]
                    if not replacement[-1].endswith("\n"):
                        replacement[-1] += "\n"
                    said.append(f"line {where}: %%{name} runs its body")
                    said.extend(f"line {where} (%%{name} body), {note}" for note in cell.notes)
            what = f"%%{name} cell" if isinstance(name, str) else "cell magic"
        else:
            what = "shell line" if method in ("system", "getoutput") else "magic"
        if replacement is None:
            replacement = [commented(line, continuation=n > 0) for n, line in enumerate(lines[first:last + 1])]
            said.append(f"line {where}: {what} skipped ({lines[first].strip()[:60]})")
        lines[first:last + 1] = replacement
        origins[first:last + 1] = [(0, where)] * len(replacement)
    for _, said in sorted(found, key=lambda item: item[0]):
        notes.extend(said)
    return lines, origins


def _ipython_method(node: ast.expr) -> bool:
    """`get_ipython().system(…)` and the other IPython calls an export holds."""
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in IPYTHON_METHODS and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name) and node.func.value.func.id == "get_ipython"
        and not node.func.value.args
    )


def _alone_on_its_lines(statement: ast.stmt, lines: list[str]) -> bool:
    """Nothing but indentation before the statement and a comment after it (not `if x: stmt`,
    not `a = 1; stmt`). Offsets are in UTF-8 bytes, as ast gives them."""
    first, last = statement.lineno - 1, (statement.end_lineno or statement.lineno) - 1
    if last >= len(lines):
        return False
    before = lines[first].encode()[: statement.col_offset]
    after = lines[last].encode()[statement.end_col_offset or 0:].strip()
    return not before.strip() and (not after or after.startswith(b"#"))


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


# --- helpers ------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """Lines with their endings, split where Python splits them (\\n, \\r\\n, \\r only)."""
    return _LINE.findall(text)


def _try_parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _parses(text: str) -> bool:
    return _try_parse(text) is not None


def _string_interiors(text: str) -> set[int]:
    """Line numbers inside a multi-line string (after its first line), as far as tokenize gets."""
    inside: set[int] = set()
    kinds = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in kinds and token.end[0] > token.start[0]:
                inside.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    return inside
