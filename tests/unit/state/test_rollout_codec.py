"""The rollout tracker state's codec: lossless, loud about bad bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state.rollout import RolloutState, RolloutStateError, decode, encode

pytestmark = pytest.mark.unit

counts = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=24)


@given(st.integers(0, 2**62), counts, st.booleans(), st.data())
def test_every_rollout_state_survives_the_round_trip(
    start: int, scored: list[int], alerting: bool, data: st.DataObject
) -> None:
    """decode(encode(s)) == s."""
    anomalous = data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=len(scored),
                                   max_size=len(scored)))  # fmt: skip
    state = RolloutState(start, tuple(scored), tuple(anomalous), alerting)
    assert decode(encode(state)) == state


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_rollout_state_error(data: bytes) -> None:
    """Bytes that are not a state raise RolloutStateError, never anything else."""
    with contextlib.suppress(RolloutStateError):
        decode(data)
