"""The telemetry watch's versioned state codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state.telemetry_watch import VERSION, StateCodecError, WatchState, decode, encode

pytestmark = pytest.mark.unit

_states = st.builds(
    WatchState,
    count=st.integers(0, 2**32 - 1),
    last_seen_ms=st.integers(-(2**63), 2**63 - 1),
    lost=st.booleans(),
)


@given(_states)
def test_state_round_trips_through_the_codec(state: WatchState) -> None:
    """Whatever is encoded decodes to an equal state."""
    assert decode(encode(state)) == state


@given(_states)
def test_encoded_state_is_small_and_starts_with_its_version(state: WatchState) -> None:
    """The bytes lead with the version and stay within 256 bytes."""
    data = encode(state)

    assert data[0] == VERSION
    assert len(data) <= 256


def test_count_beyond_four_bytes_saturates() -> None:
    """A count past 2**32 - 1 is stored as that maximum rather than failing."""
    assert decode(encode(WatchState(2**40, 0, False))).count == 2**32 - 1


@pytest.mark.parametrize("data", [b"\x02" + bytes(13), b"\x00" + bytes(13), b"\xff", b""])
def test_unknown_version_raises_codec_error(data: bytes) -> None:
    """Bytes of another version (or none) are refused with a typed error naming the version."""
    with pytest.raises(StateCodecError, match="version"):
        decode(data)


@pytest.mark.parametrize("length", [1, 5, 13, 15])
def test_truncated_or_padded_state_raises_codec_error(length: int) -> None:
    """Version-1 bytes of the wrong length are refused with the codec's typed error."""
    data = (encode(WatchState(3, 1_000, True)) + b"\x00")[:length]

    with pytest.raises(StateCodecError):
        decode(data)
