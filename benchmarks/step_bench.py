"""Pure-Python cost per reading of the device stage and the decoder (a micro-benchmark, not a test).

No JVM: the same fleet as `device_stage_bench.py` (`--fleet` registered thermostats in two
regions with fresh weather, then one reading per device per minute in event-time order) is run
through, per reading, in microseconds (best of `--repeat`):

- `decode`: `jobs.records.Decode.process_element` on the telemetry rows (wire bytes to the
  device stage's keyed event, with validation and the dead-letter preparation);
- `step+codec`: `state.device.decode`, `functions.device.step`, `state.device.encode` and
  `timers_for` on the old and new state, as the adapter did it;
- `stage`: the `functions.operators.DeviceStage` adapter on the test harness's fake state and
  timers (state read and write, step, timer moves; the watermark trails the readings by 5 s).

Run it on another tree's code by pointing PYTHONPATH there (the script itself only uses names
every tree has):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/step_bench.py
    PYTHONPATH=/work/main .venv/bin/python benchmarks/step_bench.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

T0_MS = 1_750_000_000_000  # device_stage_bench's
REGIONS = ("region-north", "region-south")
OUT_OF_ORDERNESS_MS = 5_000


def fleet_rows(fleet: int, readings: int) -> tuple[list[Any], list[Any]]:
    """(registry rows, telemetry rows): `device_stage_bench`'s inputs, its weather left out."""
    from device_stage_bench import input_rows

    from gridstream import topics

    rows = input_rows(fleet, readings)
    registry = [row for row in rows if row[0] == topics.DEVICE_REGISTRY]
    telemetry = [row for row in rows if row[0] == topics.IOT_TELEMETRY]
    return registry, telemetry


def best_us(run: Callable[[], int], repeat: int) -> float:
    """Best of `repeat` runs, in microseconds per item (`run` returns its item count)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        count = run()
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


def main() -> None:
    """Decode the fleet's rows once, then time each layer over the readings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, default=1_000)
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from functions import device
    from functions.operators import PIPELINE_KEY, DeviceStage, region_key
    from functions.pipeline import PipelineState
    from functions.wetbulb import RegionMode, RegionWeather, WetBulbPolicy
    from jobs import records
    from schemas.dead_letter import JobInfo
    from schemas.models import DeadLetter
    from state import device as device_codec
    from state import region as region_codec
    from tests.harness import Harness

    registry_rows, telemetry_rows = fleet_rows(args.fleet, args.readings)
    reader = records.DeviceRows(records.SchemaAccess(), JobInfo("bench", "0"), 10**12)
    reader.open()
    now_ms = int(time.time() * 1000)

    def decoded(rows: list[Any]) -> list[Any]:
        out = [reader.events(row, now_ms) for row in rows]
        if any(isinstance(value, DeadLetter) for value in out):
            raise SystemExit("an input was dead-lettered")
        return [event for events in out for event in events]

    registrations, readings = decoded(registry_rows), decoded(telemetry_rows)

    def run_decode() -> int:
        for row in telemetry_rows:
            reader.events(row, now_ms)
        return len(telemetry_rows)

    policy = device.DevicePolicy()
    weather = {r: RegionWeather(False, T0_MS, 20.0) for r in REGIONS}

    def run_step() -> int:
        states: dict[str, bytes] = {}
        for event in (*registrations, *readings):
            raw = states.get(event.device_id)
            old = None if raw is None else device_codec.decode(raw)
            now = max(event.ts_ms, old.last_seen_ms or 0) if old else event.ts_ms
            ctx = device.Context(now, RegionMode.NORMAL, watermark_ms=now - OUT_OF_ORDERNESS_MS)
            result = device.step(old, event, ctx)
            if result.state is not None:
                states[event.device_id] = device_codec.encode(result.state)
            device.timers_for(old, policy)
            device.timers_for(result.state, policy)
        return len(registrations) + len(readings)

    def run_stage() -> int:
        h = Harness(DeviceStage(reader, policy, WetBulbPolicy())).open()
        for region_id, wx in weather.items():
            h.process_broadcast((region_key(region_id), region_codec.encode_weather(wx)))
        h.process_broadcast((PIPELINE_KEY, region_codec.encode_pipeline(PipelineState())))
        for row, event in zip(registry_rows, registrations, strict=True):
            h.process(event.device_id, row)
        start = time.perf_counter()
        for row, event in zip(telemetry_rows, readings, strict=True):
            h.watermark = event.ts_ms - OUT_OF_ORDERNESS_MS  # timers never due: no firing
            h.process(event.device_id, row)  # decoded in the stage, as in the job
        # Only the readings count: report their time by pretending the rest took none.
        nonlocal stage_seconds
        stage_seconds = time.perf_counter() - start
        return len(readings)

    stage_seconds = 0.0

    def stage_us() -> float:
        best = float("inf")
        for _ in range(args.repeat):
            count = run_stage()
            best = min(best, stage_seconds / count * 1e6)
        return best

    print(f"fleet {args.fleet}, {len(readings):,} readings, best of {args.repeat}")
    print(f"decode      {best_us(run_decode, args.repeat):7.1f} us/reading")
    print(f"step+codec  {best_us(run_step, args.repeat):7.1f} us/event (registrations included)")
    print(f"stage       {stage_us():7.1f} us/reading (DeviceStage on the harness, decoding)")


if __name__ == "__main__":
    main()
