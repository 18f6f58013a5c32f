"""Shared by every tier. Builders and time constants live in `tests.vocabulary`, the
KeyedProcessFunction harness in `tests.harness`.

Hypothesis runs without its timing checks (the per-example deadline, the slow-generation health
check): they fail by the machine's load, not by the code (speed lives in benchmarks/). Every
property's examples are multiplied by $GRIDSTREAM_HUNT (`make hunt`)."""

from hypothesis import HealthCheck, settings

from tests.vocabulary import examples

settings.register_profile(
    "gridstream",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=examples(100),  # Hypothesis's default, for a property that sets none
)
settings.load_profile("gridstream")
