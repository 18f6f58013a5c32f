"""Starting and upgrading the job: what the user is told when a savepoint does not fit."""

from __future__ import annotations

from typing import Any

import pytest

from gridstream import deploy
from gridstream.stack import ComponentError
from jobs.device_control import JOB_NAME

pytestmark = pytest.mark.unit

SAVEPOINT = "file:/stack/flink/savepoints/savepoint-1"


class FakeFlink:
    """The session cluster as `deploy` sees it; `submit` fails the way `flink run` does when
    the savepoint holds state for an operator the job lacks, unless told to leave it out."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []
        self.running = True

    def runs_current_code(self) -> bool:
        return True

    def jobs(self) -> list[dict[str, Any]]:
        state = "RUNNING" if self.running else "FINISHED"
        return [{"jid": "old", "name": JOB_NAME, "state": state}]

    def stop_with_savepoint(self, job_id: str) -> str:
        self.running = False
        return SAVEPOINT

    def submit(self, module: str, **options: Any) -> str:
        self.submitted.append(options)
        if options["savepoint"] and not options["skip_unmapped_state"]:
            raise ComponentError(
                f"flink run {module} failed:\n... Cannot map checkpoint/savepoint state for "
                "operator 38dbb26c to the new program ..."
            )
        return "new"

    def job_state(self, job_id: str) -> str:
        return "RUNNING"


class FakeStack:
    def __init__(self) -> None:
        self.flink = FakeFlink()

    def say(self, line: str) -> None:
        pass


def test_a_savepoint_with_state_for_missing_operators_says_how_to_start_from_it() -> None:
    """The upgrade stops the old job, and the error names the savepoint and the flag to use."""
    stack: Any = FakeStack()
    with pytest.raises(ComponentError) as raised:
        deploy.upgrade_job(stack)
    message = str(raised.value)
    assert message.startswith(f"stopped with savepoint {SAVEPOINT}, not started again")
    assert f"--from-savepoint {SAVEPOINT} --allow-non-restored-state" in message
    assert "38dbb26c" not in message  # Flink's trace is replaced by what to do


def test_allowing_non_restored_state_passes_it_to_flink_run() -> None:
    stack: Any = FakeStack()
    assert deploy.start_job(stack, SAVEPOINT, allow_non_restored_state=True) == "new"
    assert stack.flink.submitted == [{"savepoint": SAVEPOINT, "skip_unmapped_state": True}]


def test_other_submission_failures_are_passed_on_as_they_are() -> None:
    stack: Any = FakeStack()
    failure = ComponentError("flink run jobs.device_control failed:\nno such file")

    def broken(module: str, **options: Any) -> str:
        raise failure

    stack.flink.submit = broken
    with pytest.raises(ComponentError) as raised:
        deploy.start_job(stack)
    assert raised.value is failure
