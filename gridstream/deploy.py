"""The device-control job on the local stack's session cluster: start it, stop it with a
savepoint, upgrade it through one (stop, then start this version from the savepoint)."""

from __future__ import annotations

from gridstream.stack import ComponentError, LocalStack
from gridstream.stack.process import wait_until
from jobs.device_control import JOB_NAME


def _running_id(stack: LocalStack) -> str | None:
    for job in stack.flink.jobs():
        if job["name"] == JOB_NAME and job["state"] in {"RUNNING", "CREATED", "INITIALIZING"}:
            return str(job["jid"])
    return None


def start_job(stack: LocalStack, savepoint: str | None = None) -> str:
    """Submit the device-control job (from `savepoint` if given); its id once it runs."""
    if not stack.flink.runs_current_code():
        stack.say("the code changed since the TaskManager started: restarting it ...")
        stack.flink.restart_taskmanager()
    origin = f" from {savepoint}" if savepoint else ""
    print(f"submitting {JOB_NAME} to the session cluster{origin} ...")
    job_id = stack.flink.submit("jobs.device_control", savepoint=savepoint)
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


def upgrade_job(stack: LocalStack) -> tuple[str, str]:
    """Stop the running job with a savepoint and start this version of it from there: the
    savepoint's path and the new job's id (its state is the old job's, migrated on read)."""
    savepoint = stop_job(stack)
    return savepoint, start_job(stack, savepoint)
