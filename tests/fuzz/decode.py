"""Coverage-guided fuzzing (atheris) of one input topic's decode -> validate -> dead-letter path.

    python -m tests.fuzz.decode TOPIC [CORPUS_DIR | INPUT_FILE ...] [libFuzzer flags]

Each input is one Kafka record (`tests.fuzz.properties.record_of`) played through the job's
decoders for TOPIC; an uncaught exception, including a `PropertyViolation`, is a crash that
libFuzzer saves (`crash-<sha1>`, or under `-artifact_prefix=`) and names. The first corpus
directory is seeded with the topic's real records (`tests.fuzz.seeds`) and a dictionary is
added unless `-dict=` is given. An input file instead of a directory replays it once.
`make fuzz` runs every topic for long; `tests/unit/jobs/test_decode_fuzz.py` briefly.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

# Only the suite's own modules are instrumented: their branches are what the fuzzer steers by
# (fastavro and pydantic-core are compiled; their outcomes show in ours).
with atheris.instrument_imports(include=["schemas", "jobs", "functions", "state", "gridstream"]):
    from gridstream import topics
    from tests.fuzz import properties, seeds


def main() -> None:
    """Seed the corpus, then hand over to libFuzzer."""
    if len(sys.argv) < 2 or sys.argv[1] not in topics.INPUTS:
        sys.exit(f"usage: {sys.argv[0]} TOPIC [CORPUS_DIR] [libFuzzer flags]; TOPIC one of "
                 f"{', '.join(topics.INPUTS)}")  # fmt: skip
    topic, args = sys.argv[1], sys.argv[2:]
    corpora = [Path(a) for a in args if not a.startswith("-") and Path(a).is_dir()]
    work = tempfile.TemporaryDirectory(prefix="gridstream-fuzz-")
    dictionary = Path(work.name) / f"{topic}.dict"
    seeds.write(topic, corpora[0] if corpora else Path(work.name) / "seeds", dictionary)
    if not corpora:  # no corpus to grow: start from the seeds all the same
        args.append(str(Path(work.name) / "seeds"))
    if not any(a.startswith("-dict=") for a in args):
        args.append(f"-dict={dictionary}")
    properties.edge()  # built before the clock starts: the first input is not the slow one
    atheris.Setup([sys.argv[0], *args], lambda data: properties.check(topic, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
