"""The bare Prefect baseline of the flow benchmark: a flow chaining as many no-op tasks as a happy ``dev_cycle`` run
has steps, and nothing else (no store, no services). Its deployment's entrypoint is this file, so a flow-run
process of it pays only Prefect's own start-up and orchestration."""

from prefect import flow, task

# tasks of a happy run: route, generate_code, compile_check, open_pull_request, wait_for_ci, merge,
# wait_for_image, roll_out, check_health, report
CHAIN = 10


@task
def noop(i: int) -> int:
    """One no-op step."""
    return i + 1


@flow(name="bare-chain")
def bare_chain() -> int:
    """``CHAIN`` no-op tasks one after another."""
    value = 0
    for _ in range(CHAIN):
        value = noop(value)
    return value
