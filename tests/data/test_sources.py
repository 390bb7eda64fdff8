"""Data source specs: parsing and the names a reader sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from nucstudy.data.sources import parse_source, source_name


def test_parse_source_splits_kind_and_folder_and_refuses_bad_specs():
    assert parse_source("synthetic") == ("synthetic", None)
    assert parse_source("consep:../data/consep256") == ("consep", Path("../data/consep256"))
    for bad, message in [
        ("pannuke:x", "unknown data source"),
        ("synthetic:x", "takes no folder"),
        ("conic:", "give the folder"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_source(bad)


def test_source_name_is_the_data_set_a_reader_knows():
    assert source_name("synthetic") == "synthetic H&E"
    assert source_name("consep:../shared/data/consep256") == "CoNSeP-256"
    assert source_name("conic:/data/conic") == "CoNIC"
    with pytest.raises(ValueError, match="unknown data source"):
        source_name("lizard:/data")
