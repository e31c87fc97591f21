"""Scratch and previous database names fit 63 bytes and stay distinct for any database name
(PostgreSQL cuts longer identifiers: both used to become the same name for long ones)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.base import scratch_name

NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=63)


@settings(max_examples=300)
@given(NAMES, st.text("0123456789abcdef", min_size=8, max_size=8))
def test_names_fit_and_differ(database, token):
    scratch, previous = scratch_name(database, "restore", token), scratch_name(database, "previous", token)
    for name in (scratch, previous):
        assert len(name.encode("utf-8")) <= 63
        assert name.endswith("_" + token)
        assert database.startswith(name.rsplit("_", 2)[0])
    assert scratch != previous
    assert scratch_name(database, "restore") != scratch_name(database, "restore")  # fresh token each time


def test_ascii_names_keep_their_first_40_characters():
    assert scratch_name("c" * 63, "restore", "0123abcd") == "c" * 40 + "_restore_0123abcd"
    assert scratch_name("crm", "previous", "0123abcd") == "crm_previous_0123abcd"


def test_a_multibyte_name_is_cut_on_a_character_boundary():
    name = scratch_name("é" * 31, "restore", "0123abcd")
    assert name == "é" * 20 + "_restore_0123abcd"
