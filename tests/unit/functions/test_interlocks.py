"""The interlocks, tried with every combination of facts (DESIGN.md safety rules 1-4, 7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.interlocks import DeviceFacts, PipelineFacts, blocking_reasons, needs_operator
from functions.wetbulb import RegionMode
from schemas.models import LOAD_REDUCING_ACTIONS, Action, DeviceClass, PriorityLevel, ReasonCode

pytestmark = pytest.mark.unit

devices = st.builds(
    DeviceFacts,
    priority=st.none() | st.sampled_from(PriorityLevel),
    device_class=st.none() | st.sampled_from(DeviceClass),
    stale=st.booleans(),
    opted_out=st.booleans(),
)
pipelines = st.builds(PipelineFacts, frozen=st.booleans(), source_silent=st.booleans())
regions = st.sampled_from(RegionMode)
actions = st.sampled_from(Action)


@given(actions, devices, regions, pipelines)
def test_life_safety_and_unknown_devices_never_pass_a_load_reducing_action(
    action: Action, device: DeviceFacts, region: RegionMode, pipeline: PipelineFacts
) -> None:
    """Property: LIFE_SAFETY or no registry record blocks every load-reducing action."""
    reasons = blocking_reasons(action, device, region, pipeline)
    if action in LOAD_REDUCING_ACTIONS and device.priority in (None, PriorityLevel.LIFE_SAFETY):
        assert ReasonCode.LIFE_SAFETY_EXCLUSION in reasons


@given(actions, devices, regions, pipelines)
def test_a_load_reducing_action_passes_only_when_every_interlock_is_clear(
    action: Action, device: DeviceFacts, region: RegionMode, pipeline: PipelineFacts
) -> None:
    """Property: no reasons for a load-reducing action means every safety condition holds."""
    if action not in LOAD_REDUCING_ACTIONS or blocking_reasons(action, device, region, pipeline):
        return
    assert device.priority not in (None, PriorityLevel.LIFE_SAFETY)
    assert region is RegionMode.NORMAL
    assert (device.stale, device.opted_out) == (False, False)
    assert (pipeline.frozen, pipeline.source_silent) == (False, False)


@given(devices, regions, pipelines)
def test_restore_is_blocked_only_by_stale_telemetry(
    device: DeviceFacts, region: RegionMode, pipeline: PipelineFacts
) -> None:
    """Property: giving load back survives freezes, suspensions and unknown devices."""
    expected = (ReasonCode.TELEMETRY_STALE,) if device.stale else ()
    assert blocking_reasons(Action.RESTORE, device, region, pipeline) == expected


def test_every_failing_interlock_is_named() -> None:
    """The audit gets all reasons, not only the first."""
    device = DeviceFacts(PriorityLevel.LIFE_SAFETY, DeviceClass.THERMOSTAT, True, True)
    reasons = blocking_reasons(
        Action.SHED, device, RegionMode.SUSPENDED, PipelineFacts(frozen=True)
    )
    assert set(reasons) == {
        ReasonCode.TELEMETRY_STALE,
        ReasonCode.LIFE_SAFETY_EXCLUSION,
        ReasonCode.WET_BULB_SUSPEND,
        ReasonCode.SAFETY_FREEZE,
        ReasonCode.OPT_OUT,
    }


@pytest.mark.parametrize(
    ("action", "device_class", "expected"),
    [
        (Action.SWITCH_OPEN, DeviceClass.FEEDER_BREAKER, True),
        (Action.SWITCH_CLOSE, DeviceClass.LINE_SWITCH, True),
        (Action.SWITCH_OPEN, None, True),
        (Action.SWITCH_OPEN, DeviceClass.POOL_PUMP, False),
        (Action.SHED, DeviceClass.FEEDER_BREAKER, False),
    ],
)
def test_only_scada_switching_waits_for_an_operator(
    action: Action, device_class: DeviceClass | None, expected: bool
) -> None:
    """SCADA (or not yet known) switching needs sign-off; IoT and non-switching do not."""
    assert needs_operator(action, device_class) is expected
