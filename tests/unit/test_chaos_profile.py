"""Choosing the chaos suite's profile (bench/chaos/profile.py)."""

from __future__ import annotations

import pytest

from bench.chaos.profile import PROFILES, pick_profile


def test_the_argument_wins_then_the_variable_then_the_default() -> None:
    assert pick_profile("ci", {"HOOKSYNC_CHAOS_PROFILE": "default"}).name == "ci"
    assert pick_profile(None, {"HOOKSYNC_CHAOS_PROFILE": "ci"}).name == "ci"
    assert pick_profile(None, {}).name == "default"


def test_an_unknown_profile_names_the_variable_and_the_value() -> None:
    with pytest.raises(ValueError, match=r"HOOKSYNC_CHAOS_PROFILE='fast' .*\['ci', 'default'\]"):
        pick_profile("fast", {})


def test_the_ci_profile_injects_each_fault_once_without_overlap() -> None:
    ci = PROFILES["ci"]
    assert not ci.overlap and ci.database_down == 10.0
    # An app outage over ~4 s makes a stream's head wait for the ~5 min second retry.
    assert 3 * ci.app_each < 4.0
