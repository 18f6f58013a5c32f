"""Ids derived from other ids: always valid for the models, distinct when their texts are."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from schemas import models
from schemas.ids import derived_id

pytestmark = pytest.mark.unit
ID = TypeAdapter(models.Id)


def test_a_valid_id_is_kept_as_it_is() -> None:
    """An id already valid (even at the full 128 characters) is its own derived id."""
    assert derived_id("feeder-1@1750000000000") == "feeder-1@1750000000000"
    assert derived_id("f" * models.ID_CHARS) == "f" * models.ID_CHARS


@given(st.text(max_size=300), st.text(max_size=300))
def test_every_text_derives_a_valid_id_and_different_texts_different_ones(a: str, b: str) -> None:
    """Whatever the text (long, with whitespace, empty), the derived id validates, and two
    texts share a derived id only if they are the same."""
    assert ID.validate_python(derived_id(a)) == derived_id(a)
    assert (derived_id(a) == derived_id(b)) == (a == b)
