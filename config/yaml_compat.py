"""Read a YAML text the way js-yaml (Nango's YAML parser) reads it, with PyYAML.

Nango's tooling reads nango.yaml with js-yaml (YAML 1.2); PyYAML (YAML 1.1) refuses two
things js-yaml takes, and ``rewrite_for_pyyaml`` rewrites them before PyYAML sees the text
so that both parsers read the same values:

- Tabs. PyYAML refuses a tab anywhere outside a quoted string or a block scalar
  (``runs: every hour<TAB>`` fails with "found character '\\t' that cannot start any
  token"); js-yaml takes it as white space between tokens, before a comment and inside an
  unquoted value. A tab that separates tokens, ends a line or precedes a comment becomes a
  space; an unquoted value with a tab inside it (``every<TAB>hour``) becomes the
  double-quoted string of exactly those characters (over all its lines when it goes on over
  several: both styles fold line breaks alike). Tabs inside quoted strings, block scalars
  (``|``, ``>``) and comments are left as they are.
- ``?`` inside an unquoted value in a flow collection (``[{id: string, label?: string}]``,
  Nango's optional field of an inline object): YAML 1.1 ends the value there, YAML 1.2 does
  not; such a value is double-quoted too.

What js-yaml refuses is refused here too, with the line and the offending text: a tab in the
indentation of a line, and a tab before a nested block collection on the same line
(``-<TAB>key: value``). ``load_like_js_yaml`` parses the rewritten text and, as js-yaml does,
refuses a mapping that gives a key twice (PyYAML alone keeps the last value silently).
The rewrite never adds or removes lines, so line numbers in later YAML errors still point
into the file as written. No I/O: text in, values out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

import yaml

from config.errors import BadInputError

__all__ = ["load_like_js_yaml", "rewrite_for_pyyaml"]

_BLANK = " \t"
_FLOW_INDICATORS = ",[]{}"
#: js-yaml and PyYAML both allow tabs between the date and the time of a timestamp; such a
#: value keeps its tabs as spaces (same timestamp) rather than being quoted into a string.
_TIMESTAMP_START = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}[Tt \t]")


def load_like_js_yaml(text: str) -> Any:
    """Parse ``text`` into the values js-yaml reads from it.

    Raises:
        BadInputError: ``yaml_syntax``, for a tab js-yaml refuses too (see
            ``rewrite_for_pyyaml``).
        yaml.YAMLError: Invalid YAML, or a mapping that gives a key twice, with the mark of
            the offending text.
    """
    # A subclass of PyYAML's SafeLoader: no arbitrary objects are built.
    return yaml.load(rewrite_for_pyyaml(text), Loader=_UniqueKeyLoader)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate mapping keys as js-yaml does."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in with `<<` may be overridden, in js-yaml too
            key = _js_key(self.construct_object(key_node, deep=True))
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}; js-yaml (Nango's parser) refuses a key "
                    "given twice in one mapping: keep one",
                    key_node.start_mark,
                )
            seen.add(key)
        return cast(dict[Any, Any], super().construct_mapping(node, deep=deep))


def _js_key(value: object) -> str:
    """The property name a JavaScript object gives ``value`` as a key (``1`` and ``'1'`` clash)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_js_key(item) for item in value)
    return str(value)


def rewrite_for_pyyaml(text: str) -> str:
    """Return ``text`` rewritten so PyYAML reads the values js-yaml reads in it.

    Args:
        text: The YAML document as written.

    Returns:
        The same document, line for line; unchanged when it holds no tab.

    Raises:
        BadInputError: ``yaml_syntax``, naming the line and showing it, for a tab that
            js-yaml refuses too (indentation, or before a nested block collection).
    """
    if "\t" not in text and "?" not in text:
        return text
    scanner = _Scanner()
    breaks: list[str] = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        body = line.rstrip("\r\n")
        breaks.append(line[len(body) :])
        scanner.feed(number, body)
    lines = scanner.finish()
    return "".join(body + brk for body, brk in zip(lines, breaks, strict=True))


@dataclass
class _PlainValue:
    """An unquoted value that ended its line, so it may go on over the next lines."""

    #: A next line continues the value only when indented deeper than this column (the
    #: value's mapping key or sequence dash).
    parent_column: int
    #: (output line index, start, end) of the value's text on each of its lines.
    parts: list[tuple[int, int, int]] = field(default_factory=list)
    has_tab: bool = False
    #: A continuation line looks like ``key: value``, which js-yaml refuses: leave the
    #: text alone so PyYAML refuses it too rather than reading it quoted.
    refused: bool = False


@dataclass
class _Scanner:
    """Walks the document line by line, remembering what spans lines."""

    out: list[str] = field(default_factory=list)
    #: The quote character of a quoted string still open at the end of the last line.
    quote: str | None = None
    #: Depth of ``[``/``{`` collections still open (they may span lines).
    flow_depth: int = 0
    #: While inside a block scalar: the indentation its content lines must exceed.
    block_indent: int | None = None
    plain: _PlainValue | None = None

    def feed(self, number: int, body: str) -> None:
        if self.plain is not None:
            if self._continue_plain(body):
                return
            self._close_plain()
        self.out.append(self._line(number, body))

    def finish(self) -> list[str]:
        if self.plain is not None:
            self._close_plain()
        return self.out

    def _line(self, number: int, body: str) -> str:
        if self.block_indent is not None:
            if _is_block_content(body, self.block_indent):
                return body  # a block scalar's text, tabs included, is the value
            self.block_indent = None
        if self.quote is not None:
            end = _quote_end(body, 0, self.quote)
            if end is None:
                return body  # the string goes on; PyYAML folds its lines as js-yaml does
            self.quote = None
            return body[:end] + self._tokens(number, body, end, _indent(body))
        stripped = body.lstrip(_BLANK)
        leading = body[: len(body) - len(stripped)]
        if not stripped or stripped.startswith("#"):
            # Blank and comment-only lines: js-yaml skips their tabs as white space.
            return leading.replace("\t", " ") + stripped
        if "\t" in leading and self.flow_depth == 0:
            _refuse(number, body, leading.index("\t"), "a tab is used for indentation")
        return leading.replace("\t", " ") + self._tokens(number, body, len(leading), len(leading))

    def _tokens(self, number: int, body: str, start: int, indent: int) -> str:
        """Rewrite ``body[start:]``, which begins where a token may begin."""
        out: list[str] = []
        i, n = start, len(body)
        #: Column of a tab that followed a block indicator on this line (js-yaml refuses a
        #: nested block collection after it).
        tab_after_indicator: int | None = None
        after_indicator = False
        #: Column of the innermost mapping key or sequence dash: the parent of a value.
        parent_column = indent
        token_column = indent
        while i < n:
            char = body[i]
            if char in _BLANK:
                j = _skip_blank(body, i)
                if after_indicator and "\t" in body[i:j] and tab_after_indicator is None:
                    tab_after_indicator = i + body[i:j].index("\t")
                out.append(" " * (j - i))
                i = j
                if i < n and body[i] == "#":
                    out.append(body[i:])  # a comment: kept as written
                    break
                continue
            if char == "#" and (i == 0 or body[i - 1] in _BLANK):
                out.append(body[i:])  # a comment after the indentation
                break
            after_indicator = False
            if char in "\"'":
                token_column = i
                end = _quote_end(body, i + 1, char)
                if end is None:
                    self.quote = char
                    out.append(body[i:])
                    break
                out.append(body[i:end])
                i = end
                continue
            if char in "[{":
                self.flow_depth += 1
                out.append(char)
                i += 1
                continue
            if char in "]}" or (char == "," and self.flow_depth):
                if char != ",":
                    self.flow_depth = max(0, self.flow_depth - 1)
                out.append(char)
                i += 1
                continue
            if char in "-?:" and self._is_indicator(body, i):
                if self.flow_depth == 0:
                    if tab_after_indicator is not None and char in "-:":
                        _refuse(
                            number,
                            body,
                            tab_after_indicator,
                            "a tab comes before a nested block collection on the same line",
                        )
                    after_indicator = True
                    parent_column = token_column if char == ":" else i
                out.append(char)
                i += 1
                continue
            if char in "|>" and self.flow_depth == 0:
                # A block scalar header; its content is the lines indented deeper.
                self.block_indent = indent
                out.append(_blank_to_spaces_before_comment(body[i:]))
                break
            token_column = i
            if char in "&*!":
                j = i
                while (
                    j < n
                    and body[j] not in _BLANK
                    and not (self.flow_depth and body[j] in _FLOW_INDICATORS)
                ):
                    j += 1
                out.append(body[i:j])
                i = j
                continue
            end = self._plain_end(body, i)
            if self.flow_depth == 0 and _skip_blank(body, end) == n:
                # It may go on over the next lines: quoted (if need be) once it ends.
                column = start + sum(len(piece) for piece in out)
                self.plain = _PlainValue(parent_column, [(len(self.out), column, column + end - i)])
                self.plain.has_tab = "\t" in body[i:end]
                out.append(body[i:end])
            else:
                out.append(_quoted_if_needed(body[i:end], flow=self.flow_depth > 0))
            i = end
        return "".join(out)

    def _continue_plain(self, body: str) -> bool:
        """Take ``body`` as the next line of the open unquoted value, if it is one."""
        plain = cast(_PlainValue, self.plain)
        stripped = body.lstrip(_BLANK)
        if not stripped:
            # An empty line inside the value folds to a line break, whatever its blanks.
            self.out.append(body.replace("\t", " "))
            return True
        leading = body[: len(body) - len(stripped)]
        spaces = len(leading) - len(leading.lstrip(" "))
        if stripped.startswith("#") or spaces <= plain.parent_column:
            return False
        # Past its first `spaces` columns, a tab in the indentation only separates.
        comment = _comment_start(body, len(leading))
        end = len(body[:comment].rstrip(_BLANK))
        text = body[len(leading) : end]
        plain.has_tab = plain.has_tab or "\t" in text
        plain.refused = plain.refused or bool(re.search(r":(\s|$)", text))
        plain.parts.append((len(self.out), len(leading), end))
        blanks = body[end:comment].replace("\t", " ")
        self.out.append(leading.replace("\t", " ") + text + blanks + body[comment:])
        if comment < len(body):
            self._close_plain()  # a comment ends the value
        return True

    def _close_plain(self) -> None:
        plain = cast(_PlainValue, self.plain)
        self.plain = None
        if not plain.has_tab or plain.refused:
            return
        last = len(plain.parts) - 1
        for position, (index, start, end) in enumerate(plain.parts):
            line = self.out[index]
            text = line[start:end]
            if last == 0:
                text = _quoted_if_needed(text, flow=False)
            else:
                text = _escape(text)
                text = ('"' if position == 0 else "") + text + ('"' if position == last else "")
            self.out[index] = line[:start] + text + line[end:]

    def _is_indicator(self, body: str, i: int) -> bool:
        """True when ``-``, ``?`` or ``:`` at ``i`` is an indicator, not part of a value."""
        following = body[i + 1] if i + 1 < len(body) else " "
        if following in _BLANK:
            return True
        return self.flow_depth > 0 and following in _FLOW_INDICATORS

    def _plain_end(self, body: str, start: int) -> int:
        """Where the unquoted value starting at ``start`` ends, its trailing blanks excluded."""
        i, end, n = start, start, len(body)
        while i < n:
            char = body[i]
            if char in _BLANK:
                j = _skip_blank(body, i)
                if j == n or body[j] == "#":
                    break
                i = j
                continue
            if char == ":" and self._is_indicator(body, i):
                break
            if self.flow_depth and char in _FLOW_INDICATORS:
                break
            i += 1
            end = i
        return max(end, start + 1)


def _quoted_if_needed(value: str, *, flow: bool) -> str:
    """A one-line unquoted value, double-quoted when PyYAML would not read it as js-yaml does.

    That is when it holds a tab, or a ``?`` inside a flow collection. Either makes it a
    string for both parsers (no other type has such characters), so quoting keeps it.
    """
    if "\t" not in value and not (flow and "?" in value):
        return value
    if _TIMESTAMP_START.match(value):
        return value.replace("\t", " ")
    return f'"{_escape(value)}"'


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")


def _quote_end(body: str, i: int, quote: str) -> int | None:
    """Index just past the closing ``quote`` from ``i`` on, or None when the line ends first."""
    n = len(body)
    while i < n:
        char = body[i]
        if quote == '"' and char == "\\":
            i += 2
            continue
        if char == quote:
            if quote == "'" and i + 1 < n and body[i + 1] == "'":
                i += 2  # '' is an escaped quote inside a single-quoted string
                continue
            return i + 1
        i += 1
    return None


def _comment_start(body: str, i: int) -> int:
    """Index of the comment (a ``#`` after a blank) from ``i`` on, or ``len(body)``."""
    for j in range(max(i, 1), len(body)):
        if body[j] == "#" and body[j - 1] in _BLANK:
            return j
    return len(body)


def _blank_to_spaces_before_comment(rest: str) -> str:
    """A block scalar header line: its blanks become spaces, a comment stays as written."""
    comment = _comment_start(rest, 0)
    return rest[:comment].replace("\t", " ") + rest[comment:]


def _is_block_content(body: str, parent_indent: int) -> bool:
    if not body.strip(_BLANK):
        return True  # blank lines belong to the block scalar
    return _indent(body) > parent_indent


def _indent(body: str) -> int:
    return len(body) - len(body.lstrip(" "))


def _skip_blank(body: str, i: int) -> int:
    while i < len(body) and body[i] in _BLANK:
        i += 1
    return i


def _refuse(number: int, body: str, column: int, what: str) -> None:
    raise BadInputError(
        f"line {number}, column {column + 1}: {what}: {body!r}; js-yaml (Nango's parser) "
        "refuses it too; use spaces there",
        code="yaml_syntax",
        field=f"line {number}",
    )
