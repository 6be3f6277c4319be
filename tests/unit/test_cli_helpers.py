"""The operator commands' pure parts: times on the command line, tables, the API address,
the Procfile ``hooksync up`` reads."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.errors import BadInputError, ConfigError
from hooksync.api_client import ApiClient, base_url_from
from hooksync.output import cell, parse_when, print_table, short_time
from hooksync.up import BUILT_IN, command_line, read_procfile
from tests.support.paths import REPO

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-26T10:00:00Z", "2026-11-26T10:00:00+00:00"),
        ("2026-11-26T10:00:00", "2026-11-26T10:00:00+00:00"),  # no zone: UTC
        ("2026-11-26T12:00:00+02:00", "2026-11-26T10:00:00+00:00"),
        ("2026-11-26", "2026-11-26T00:00:00+00:00"),
        ("90s", "2026-11-26T11:58:30+00:00"),
        ("30m", "2026-11-26T11:30:00+00:00"),
        ("2h", "2026-11-26T10:00:00+00:00"),
        ("7d", "2026-11-19T12:00:00+00:00"),
    ],
)
def test_times_are_iso_or_an_age(value: str, expected: str) -> None:
    assert parse_when(value, "--since", now=NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "2h ago", "-1h", "2026-13-01", ""])
def test_a_bad_time_names_the_option_and_the_value(value: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_when(value, "--since", now=NOW)
    assert str(caught.value).startswith("--since: expected an ISO-8601 time")
    assert repr(value) in str(caught.value)


def test_tables_align_columns_and_cut_long_cells_but_the_last() -> None:
    out = io.StringIO()
    long = "x" * 100
    print_table(
        ["ID", "NOTE", "LAST"], [[1, long, long], [22, None, {"a": 1}]], empty="-", stream=out
    )
    lines = out.getvalue().splitlines()
    assert lines[0].index("NOTE") == lines[1].index("x") == lines[2].index("-")
    assert "x" * 59 + "…" in lines[1]
    assert lines[1].endswith("  " + long)
    assert lines[2].endswith('{"a":1}')


def test_an_empty_table_is_one_line() -> None:
    out = io.StringIO()
    print_table(["ID"], [], empty="no events match", stream=out)
    assert out.getvalue() == "no events match\n"


def test_cells_and_times() -> None:
    assert cell(None) == "-"
    assert cell(True) == "yes"
    assert cell("a\nb\tc") == "a b c"
    assert short_time("2026-11-26T12:00:00.123Z") == "2026-11-26 12:00:00"
    assert short_time(None) == "-"


def test_the_api_address_defaults_to_where_web_listens() -> None:
    assert base_url_from({}) == "http://127.0.0.1:3003"
    assert base_url_from({"HOOKSYNC_HOST": "0.0.0.0", "HOOKSYNC_PORT": "8000"}) == (
        "http://127.0.0.1:8000"
    )
    assert base_url_from({"HOOKSYNC_URL": "https://sync.example.com/"}) == (
        "https://sync.example.com"
    )
    with pytest.raises(ConfigError, match="HOOKSYNC_URL must be an http"):
        base_url_from({"HOOKSYNC_URL": "sync.example.com:3003"})


def test_the_client_never_shows_its_key() -> None:
    client = ApiClient("http://127.0.0.1:3003", "very-secret-key")
    assert "very-secret-key" not in repr(client) + str(vars(client).get("base_url"))
    client.close()


def test_the_shipped_procfile_is_the_built_in_list() -> None:
    assert read_procfile(REPO / "Procfile") == BUILT_IN
    assert list(BUILT_IN)[0] == "release"


def test_procfile_lines_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "Procfile"
    path.write_text("# comment\n\nweb: hooksync web --workers 4\nclock: ./bin/clock 'a b'\n")
    assert read_procfile(path) == {"web": "hooksync web --workers 4", "clock": "./bin/clock 'a b'"}
    path.write_text("web hooksync web\n")
    with pytest.raises(ConfigError, match=r"Procfile:1: expected 'name: command'"):
        read_procfile(path)
    path.write_text("web: a\nweb: b\n")
    with pytest.raises(ConfigError, match="process 'web' is listed twice"):
        read_procfile(path)


def test_hooksync_commands_run_with_this_python() -> None:
    assert command_line("hooksync web --workers 4") == [
        sys.executable, "-m", "hooksync.cli", "web", "--workers", "4",
    ]  # fmt: skip
    assert command_line("./bin/clock 'a b'") == ["./bin/clock", "a b"]


def test_gunicorn_trusts_forwarded_headers_only_from_the_configured_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hooksync import gunicorn_config

    monkeypatch.setenv("HOOKSYNC_TRUSTED_PROXIES", "10.1.2.3/16, ::1")
    assert gunicorn_config._trusted_proxies() == "10.1.0.0/16,::1/128"
    monkeypatch.delenv("HOOKSYNC_TRUSTED_PROXIES")
    # Not gunicorn's default (127.0.0.1,::1): with no proxy configured, nobody is trusted.
    assert gunicorn_config._trusted_proxies() == ""
