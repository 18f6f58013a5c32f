"""The device-control job on the local stack's session cluster: start it, stop it with a
savepoint, upgrade it through one (stop, then start this version from the savepoint)."""

from __future__ import annotations

from gridstream.stack import ComponentError, LocalStack
from gridstream.stack.process import wait_until
from jobs.device_control import JOB_NAME

# What `flink run` says when a savepoint holds state for an operator the job no longer has.
UNMAPPED_STATE = "Cannot map checkpoint/savepoint state for operator"


def _running_id(stack: LocalStack) -> str | None:
    for job in stack.flink.jobs():
        if job["name"] == JOB_NAME and job["state"] in {"RUNNING", "CREATED", "INITIALIZING"}:
            return str(job["jid"])
    return None


def start_job(
    stack: LocalStack, savepoint: str | None = None, allow_non_restored_state: bool = False
) -> str:
    """Submit the device-control job (from `savepoint` if given, leaving out its state for
    operators this version lacks if `allow_non_restored_state`); its id once it runs."""
    if not stack.flink.runs_current_code():
        stack.say("the code changed since the TaskManager started: restarting it ...")
        stack.flink.restart_taskmanager()
    origin = f" from {savepoint}" if savepoint else ""
    print(f"submitting {JOB_NAME} to the session cluster{origin} ...")
    try:
        job_id = stack.flink.submit(
            "jobs.device_control", savepoint=savepoint, skip_unmapped_state=allow_non_restored_state
        )
    except ComponentError as err:
        if UNMAPPED_STATE not in str(err):
            raise
        raise ComponentError(
            f"savepoint {savepoint} holds state for operators this version does not have (one "
            "taken before 0.6, when the Kafka source and sink had no fixed uids, or before "
            "telemetry and the registry got Kafka sources of their own, does): start "
            f"with `gridstream job start --from-savepoint {savepoint} --allow-non-restored-state`"
            "; every stage's state is kept, and the Kafka source resumes from the offsets its "
            "consumer group committed with the savepoint"
        ) from None
    if not wait_until(lambda: stack.flink.job_state(job_id) == "RUNNING", 120, 1.0):
        raise ComponentError(
            f"{JOB_NAME} ({job_id}) is {stack.flink.job_state(job_id)}, not RUNNING: "
            f"see {stack.flink.home / 'log'}"
        )
    return job_id


def ensure_job(stack: LocalStack) -> str:
    """The id of the running device-control job, submitting it first if needed."""
    job_id = _running_id(stack)
    if job_id is None:
        return start_job(stack)
    if not stack.flink.runs_current_code():
        stack.say(f"{JOB_NAME} runs older code: `gridstream job upgrade` runs this version")
    return job_id


def stop_job(stack: LocalStack) -> str:
    """Stop the running device-control job with a savepoint; the savepoint's path."""
    job_id = _running_id(stack)
    if job_id is None:
        raise ComponentError(f"{JOB_NAME} is not running: start it with `gridstream job start`")
    return stack.flink.stop_with_savepoint(job_id)


def upgrade_job(stack: LocalStack, allow_non_restored_state: bool = False) -> tuple[str, str]:
    """Stop the running job with a savepoint and start this version of it from there: the
    savepoint's path and the new job's id (its state is the old job's, migrated on read)."""
    savepoint = stop_job(stack)
    try:
        return savepoint, start_job(stack, savepoint, allow_non_restored_state)
    except ComponentError as err:
        raise ComponentError(
            f"stopped with savepoint {savepoint}, not started again: {err}"
        ) from err
