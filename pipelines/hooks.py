"""What a failed step leaves in the run log: one line a researcher can act on, not only a traceback."""

import dagster as dg


@dg.failure_hook(name="explain_failure")
def explain_failure(context: dg.HookContext) -> None:
    """Names the step, its first error line and what survives, so the run page says what to do next."""
    error = context.op_exception
    reason = getattr(error, "description", None) or (str(error) if error else "see the step's log")
    first_line = next((line for line in str(reason).splitlines() if line.strip()), "no message")
    context.log.error(
        f"TPT step {context.op.name} of job {context.job_name} failed: {first_line} | "
        "finished outputs are kept; fix the cause and re-run the job: finished stages and shards return at once."
    )
