"""``config.yaml_compat.rewrite_for_pyyaml``: PyYAML reads tabs and flow ``?`` as js-yaml does.

Every expected value below is what js-yaml 4 (the version ``@nangohq/nango-yaml`` 0.71 uses)
returns for the same text; the refused cases are the ones js-yaml refuses.
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from config.errors import BadInputError
from config.yaml_compat import load_like_js_yaml, rewrite_for_pyyaml

_MINUS_5H = dt.timezone(-dt.timedelta(hours=5))


def read(text: str) -> object:
    return yaml.safe_load(rewrite_for_pyyaml(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # After a value, before a comment, between tokens: white space.
        ("runs: every hour\t\n", {"runs": "every hour"}),
        ("track_deletes: true\t\t# comment\n", {"track_deletes": True}),
        ("a: 1\t", {"a": 1}),
        ("a: x\t#y\n", {"a": "x"}),
        ("a:\tb\n", {"a": "b"}),
        ("a\t: b\n", {"a": "b"}),
        ("a:\t\n  b: 1\n", {"a": {"b": 1}}),
        ("a:\t# c\n  b: 1\n", {"a": {"b": 1}}),
        ("a: [x,\ty]\t\n", {"a": ["x", "y"]}),
        ("a: {x: 1,\ty: 2}\t\n", {"a": {"x": 1, "y": 2}}),
        ("a: [x,\n\ty]\n", {"a": ["x", "y"]}),
        ("a:\n  - x\t\n  -\ty\n", {"a": ["x", "y"]}),
        ("? \ta\n: b\n", {"a": "b"}),
        ("a: &x\tfoo\nb: *x\n", {"a": "foo", "b": "foo"}),
        ("a: true\t\nb: 1\t\nc: null\t\nd: 1.5\t\n", {"a": True, "b": 1, "c": None, "d": 1.5}),
        # Blank and comment-only lines may hold tabs.
        ("a: 1\n\t# c\nb: 2\n", {"a": 1, "b": 2}),
        ("a: 1\n\t\nb: 2\n", {"a": 1, "b": 2}),
        # Quoted strings and block scalars keep their tabs; what follows them is white space.
        ("a: \"x\ty\"\t\nb: 'p\tq'\t# c\n", {"a": "x\ty", "b": "p\tq"}),
        ('a: "q\\"\t"\t\n', {"a": 'q"\t'}),
        ("a: 'it''s\t'\t# x\n", {"a": "it's\t"}),
        ('a: "multi\n  line\t" \t\nb: 2\n', {"a": "multi line\t", "b": 2}),
        ('a: "x\n\ty"\n', {"a": "x y"}),
        ("a: |\n  x\t\n  y\n", {"a": "x\t\ny\n"}),
        ("a: |\t# c\n  x\n", {"a": "x\n"}),
        ("a: >\n  folded\ttext\n  more\n\nb: c\t\n", {"a": "folded\ttext more\n", "b": "c"}),
        # A tab inside an unquoted value is part of it, as are the characters around it.
        ("a: every\thour\n", {"a": "every\thour"}),
        ("a: every \t hour \t\n", {"a": "every \t hour"}),
        ("a: tr\tue\n", {"a": "tr\tue"}),
        ('a: x\t"y"\n', {"a": 'x\t"y"'}),
        ("a: x\\\ty\n", {"a": "x\\\ty"}),
        ("a\tb: 1\n", {"a\tb": 1}),
        ("a: [x\ty, z]\n", {"a": ["x\ty", "z"]}),
        ("a: x #y\tz\n", {"a": "x"}),
        # A `?` inside an unquoted value in a flow collection is part of it (YAML 1.2).
        ("a: [{id: string, label?: string}]\n", {"a": [{"id": "string", "label?": "string"}]}),
        ("a: [x?y, z?]\n", {"a": ["x?y", "z?"]}),
        ("a: {? k: v}\n", {"a": {"k": "v"}}),
        ("k?: v?\n", {"k?": "v?"}),
        # Unquoted values over several lines fold as js-yaml folds them.
        ("a: x\n  \ty\n", {"a": "x y"}),
        ("a: x\n  y\tz\n", {"a": "x y\tz"}),
        ("a: x\ty\n  z\n", {"a": "x\ty z"}),
        ("a: x\ty\n\n  z\n\n\nb: c\n", {"a": "x\ty\nz", "b": "c"}),
        ('a: x\n  y\t"z\n  w\\v\t\nb: 1\n', {"a": 'x y\t"z w\\v', "b": 1}),
        ("- x\ty\n  z\n- q\n", ["x\ty z", "q"]),
        ("a: x\ty\n  z # c\nb: 1\n", {"a": "x\ty z", "b": 1}),
        ("- a: x\n   \ty\n", [{"a": "x y"}]),
        # A timestamp may separate its date and time with tabs; it stays a timestamp.
        (
            "a: 2001-12-14\t21:59:43.10 -5\n",
            {
                "a": dt.datetime(
                    2001, 12, 14, 21, 59, 43, 100000, dt.timezone(-dt.timedelta(hours=5))
                )
            },
        ),
    ],
)
def test_tabs_read_as_js_yaml_reads_them(text: str, expected: object) -> None:
    assert read(text) == expected


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("a:\n\tb: 1\n", 2, "a tab is used for indentation"),
        ("a:\n  \tb: 1\n", 2, "a tab is used for indentation"),
        ("\ta: 1\n", 1, "a tab is used for indentation"),
        ("a: |\n  x\n\ty\n", 3, "a tab is used for indentation"),
        ("a: x\n\ty\n", 2, "a tab is used for indentation"),
        ("- a: x\n  \ty\n", 2, "a tab is used for indentation"),
        ("-\ta: 1\n", 1, "a tab comes before a nested block collection"),
        ("- \ta: 1\n", 1, "a tab comes before a nested block collection"),
        ("a:\tb: 1\n", 1, "a tab comes before a nested block collection"),
        ("-\t- x\n", 1, "a tab comes before a nested block collection"),
    ],
)
def test_tabs_js_yaml_refuses_are_refused_with_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(BadInputError) as caught:
        rewrite_for_pyyaml(text)
    assert caught.value.code == "yaml_syntax"
    assert f"line {line}," in str(caught.value) and what in str(caught.value)
    assert repr(text.splitlines()[line - 1]) in str(caught.value)  # shows the line


@pytest.mark.parametrize(
    "text",
    [
        "a: x:\ty\n",  # js-yaml: bad indentation of a mapping entry
        "a: x\n  \ty: z\n",  # a continuation that reads as `key: value`
        "a: x\ty\n  z: w\n",
    ],
)
def test_what_js_yaml_refuses_stays_a_yaml_error(text: str) -> None:
    with pytest.raises(yaml.YAMLError):
        read(text)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("a: 1\na: 2\n", "a", 2),
        ("a:\n  b: 1\n  b: 2\n", "b", 3),
        ("a: [{b: 1, b: 2}]\n", "b", 1),
        ('1: a\n"1": b\n', "1", 2),  # one property name for JavaScript
        ("~: 1\nnull: 2\n", "null", 2),
        ("true: 1\n'true': 2\n", "true", 2),
    ],
)
def test_a_key_given_twice_is_refused_as_js_yaml_does(text: str, key: str, line: int) -> None:
    with pytest.raises(yaml.YAMLError) as caught:
        load_like_js_yaml(text)
    assert f"found duplicate key {key!r}" in str(caught.value)
    assert caught.value.problem_mark.line + 1 == line  # type: ignore[attr-defined]


def test_keys_merged_in_may_be_overridden_as_in_js_yaml() -> None:
    text = "x: &x {a: 1, b: 2}\ny:\n  <<: *x\n  a: 3\n"
    assert load_like_js_yaml(text) == {"x": {"a": 1, "b": 2}, "y": {"a": 3, "b": 2}}


def test_lines_are_kept_so_later_errors_point_into_the_file() -> None:
    text = "a: x\ty\r\nb: [1,\t2]\nc: |\n  \tz\n"
    assert rewrite_for_pyyaml(text).count("\n") == text.count("\n")
    assert rewrite_for_pyyaml(text).splitlines(keepends=True)[0].endswith("\r\n")


# --- properties -------------------------------------------------------------------------

#: Words no YAML resolver turns into anything but a string.
_WORDS = st.text(alphabet="qxz", min_size=1, max_size=4)
_BLANKS = st.text(alphabet=" \t", min_size=1, max_size=3)


@st.composite
def _value(draw: st.DrawFn) -> str:
    words = draw(st.lists(_WORDS, min_size=1, max_size=4))
    value = words[0]
    for word in words[1:]:
        value += draw(_BLANKS) + word
    return value


@given(
    entries=st.dictionaries(_WORDS, _value(), min_size=1, max_size=5),
    trailing=st.lists(st.text(alphabet=" \t", max_size=3), min_size=5, max_size=5),
    comments=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_values_keep_inner_blanks_and_lose_trailing_ones(
    entries: dict[str, str], trailing: list[str], comments: list[bool]
) -> None:
    lines = ["root:"]
    for (key, value), after, comment in zip(entries.items(), trailing, comments, strict=False):
        line = f"  {key}:\t{value}{after}"
        if comment:
            line += f"{after or ' '}\t# note\t{value}"
        lines.append(line)
    assert read("\n".join(lines) + "\n") == {"root": entries}


@given(st.text(alphabet=st.characters(blacklist_characters="\t[{")))
def test_text_without_tabs_or_flow_collections_is_unchanged(text: str) -> None:
    assert rewrite_for_pyyaml("?" + text) == "?" + text  # "?" makes it go through the scan
