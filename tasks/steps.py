"""The steps of the dev cycle. Each body only calls ports and domain functions and returns ``Done``; the
``@step`` mechanism (``tasks/_step.py``) times, records, caches and retries it.

Every step with a side effect first finds it by request key — the branch and conversation by the key, the
PR by its marker, the merge by the PR's state, the rollout by the Deployment's annotation — so a new attempt,
an upgraded step or an expired cache never repeats one.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from promptship.adapters.compile_check import inspect_repository
from promptship.domain.instructions import (
    CILogSummary,
    FollowUpContext,
    agent_instruction,
    ci_log_summary,
    ci_summary_call,
    follow_up_instruction,
    repair_instruction,
)
from promptship.domain.pull_request import pr_text_call, pr_title_and_body
from promptship.domain.report import StepFacts
from promptship.domain.request import DevRequest, branch_for, conversation_id_for
from promptship.domain.results import (
    AgentHandle,
    AgentResult,
    AgentTask,
    CIResult,
    GenerationResult,
    HealthResult,
    MergeResult,
    PullRequestInfo,
    Remark,
    RollbackResult,
    RolloutResult,
    RouteDecision,
    WriteBackResult,
)
from promptship.domain.rollout import already_rolled_back, with_image
from promptship.domain.writeback import (
    RevertEvidence,
    revert_body,
    revert_comment,
    revert_marker,
    revert_title,
)
from promptship.errors import BudgetExceeded, LLMError, SensitiveDataBlocked
from promptship.faults import (
    AGENT_WORKING,
    BETWEEN_APPLY_AND_VERDICT,
    BETWEEN_PUSH_AND_PR,
    DURING_ROLLBACK,
    WAITING_FOR_CI,
    kill_point,
)
from tasks._step import Done, by_round, plain, step
from tasks.context import RunContext


@step("route", uses=("llm",))
def route_request(ctx: RunContext, request: DevRequest) -> Done[RouteDecision]:
    """Classify the request and choose the model (local or cloud) the code agent will use, and why."""
    llm = ctx.ports.llm
    llm.open_run(ctx.attempt.id, budget_usd=request.budget_usd, repository=request.repository)
    decision = llm.route(request.prompt, task_class=request.task_class, force_local=request.sensitive)
    return Done(
        decision,
        "routed",
        model=decision.model,
        mode=decision.mode,
        reason=decision.reason,
        facts=StepFacts(task_class=decision.task_class, sensitive=decision.sensitive),
    )


@step("generate_code", uses=("code_host", "llm", "agent"))
def generate_code(ctx: RunContext, request: DevRequest, decision: RouteDecision) -> Done[GenerationResult]:
    """Check out the repository on the request's branch, let the code agent work, and push what it committed."""
    p, key, ledger_run = ctx.ports, ctx.request_key, ctx.attempt.id
    branch = branch_for(key)
    workspace = p.code_host.prepare_workspace(
        request.repository, request.base_branch, branch, str(Path(ctx.limits.workspace_root) / key)
    )
    existing = p.code_host.find_pull_request(request.repository, key)
    if existing is not None and existing.merged and not request.continues:
        # an earlier attempt's change is merged (its branch deleted): nothing for the agent, nothing to push
        done = AgentResult(verdict="finished", conversation_id=conversation_id_for(key), final_message="merged")
        merged = GenerationResult(
            agent=done, head_sha=existing.head_sha, workspace=workspace, model=decision.model, mode=decision.mode
        )
        return Done(
            merged,
            "finished",
            model=decision.model,
            mode=decision.mode,
            reason=decision.reason,
            facts=StepFacts(found=True, conversation_id=done.conversation_id, head_sha=existing.head_sha),
        )
    access = p.llm.agent_access(ledger_run, decision, request.budget_usd)
    spent_before = p.llm.run_cost_usd(ledger_run)
    agent_task = AgentTask(
        run_key=key,
        conversation_id=conversation_id_for(key),
        instruction=agent_instruction(request, branch=branch, conventions=inspect_repository(workspace)),
        workspace=workspace,
        model=access.model,
        base_url=access.base_url,
        budget_usd=max(0.0, request.budget_usd - spent_before),
        max_iterations=ctx.limits.agent_max_iterations,
        timeout_s=ctx.limits.agent_timeout_s,
    )
    handle = p.agent.start(agent_task, access)
    if request.continues and not handle.created:  # a follow-up: the same conversation hears the new instruction
        p.agent.send(handle, follow_up_instruction(request.prompt, _follow_up_context(ctx, request, existing)))
    kill_point(AGENT_WORKING)
    result = p.agent.result(handle, timeout_s=ctx.limits.agent_timeout_s)
    ledger_cost = round(p.llm.run_cost_usd(ledger_run) - spent_before, 8)
    head_sha = size = None
    if result.verdict == "finished":
        head_sha = p.code_host.push_branch(request.repository, workspace, branch)
        kill_point(BETWEEN_PUSH_AND_PR)
        size = p.code_host.change_size(workspace, request.base_branch)
    generation = GenerationResult(
        agent=result, head_sha=head_sha, workspace=workspace, model=decision.model, mode=decision.mode
    )
    return Done(
        generation,
        result.verdict,
        model=decision.model,
        mode=decision.mode,
        reason=decision.reason,
        usage=result.usage,
        error=p.llm.redact(result.error) if result.error else None,
        facts=StepFacts(
            found=not handle.created and not request.continues,
            conversation_id=result.conversation_id,
            head_sha=head_sha,
            files_changed=size.files_changed if size else len(result.changed_files),
            lines_changed=size.lines_changed if size else None,
            ledger_cost_usd=ledger_cost,
        ),
    )


def _follow_up_context(ctx: RunContext, request: DevRequest, pr: PullRequestInfo | None) -> FollowUpContext:
    """What people said around a follow-up — the PR's discussion and review comments, the comments of the issue
    its body references — redacted like prompts before the agent sees any of it."""
    host, redact = ctx.ports.code_host, ctx.ports.llm.redact
    number = request.source_pr or (pr.number if pr else None)
    issue = pr.issue_number if pr else None

    def redacted(remarks: list[Remark]) -> tuple[Remark, ...]:
        return tuple(
            r.model_copy(update={"body": redact(r.body), "path": redact(r.path) if r.path else None}) for r in remarks
        )

    return FollowUpContext(
        discussion=redacted(host.discussion(request.repository, number)) if number else (),
        review=redacted(host.review_comments(request.repository, number)) if number else (),
        issue_number=issue,
        issue=redacted(host.discussion(request.repository, issue)) if issue and issue != number else (),
    )


@step("compile_check", uses=("compiler",), label=by_round("compile_check", first_plain=True), retries=0)
def compile_check(ctx: RunContext, generation: GenerationResult, round_number: int = 1) -> Done[GenerationResult]:
    """Check that what the agent produced builds (the seed's compile-rate KPI)."""
    result = ctx.ports.compiler.check(generation.workspace, generation.agent.changed_files)
    return Done(
        generation.model_copy(update={"compile": result}),
        "compiled" if result.compiled else "not_compiled",
        error=None if result.compiled else result.output[-500:],
        facts=StepFacts(compiled=result.compiled),
        detail={"command": result.command},
    )


@step("open_pull_request", uses=("code_host", "llm"))
def open_pull_request(ctx: RunContext, request: DevRequest, generation: GenerationResult) -> Done[PullRequestInfo]:
    """Find the request's PR, or write its title and body through the LLM gateway (docs class) and open it."""
    p, key = ctx.ports, ctx.request_key
    existing = p.code_host.find_pull_request(request.repository, key)
    if existing is not None:
        return Done(existing, "found", facts=StepFacts(found=True, pr_number=existing.number, pr_url=existing.url))
    spent_before = p.llm.run_cost_usd(ctx.attempt.id)
    reply = p.llm.complete(pr_text_call(ctx.attempt.id, request, generation))
    title, body = pr_title_and_body(p.llm.redact, request, key, reply.content)
    pr = p.code_host.find_or_create_pull_request(
        request.repository,
        run_key=key,
        branch=branch_for(key),
        base_branch=request.base_branch,
        title=title,
        body=body,
        labels=request.labels,
    )
    return Done(
        pr,
        "opened" if pr.created else "found",
        model=reply.model,
        mode=reply.decision.mode,
        reason=reply.decision.reason,
        usage=reply.usage,
        facts=StepFacts(
            found=not pr.created,
            pr_number=pr.number,
            pr_url=pr.url,
            ledger_cost_usd=round(p.llm.run_cost_usd(ctx.attempt.id) - spent_before, 8),
        ),
    )


@step("wait_for_ci", uses=("code_host",), label=by_round("wait_for_ci"), key=("sha",))
def wait_for_ci(
    ctx: RunContext, request: DevRequest, sha: str, round_number: int, timeout_s: float | None = None
) -> Done[CIResult]:
    """Wait for the combined CI verdict of ``sha`` (checks and statuses); ``timeout_s``: what is left of a wait
    that suspended (``tasks/waiting.py``), else the run's CI timeout."""
    wait_s = ctx.limits.ci_timeout_s if timeout_s is None else timeout_s
    ci = ctx.ports.code_host.wait_for_ci(request.repository, sha, timeout_s=wait_s)
    kill_point(WAITING_FOR_CI)
    return Done(
        ci,
        ci.verdict,
        facts=StepFacts(
            head_sha=sha, ci_verdict=ci.verdict, failing_checks=", ".join(c.name for c in ci.failing) or None
        ),
    )


@step("repair", uses=("llm", "agent", "code_host"), label=by_round("repair"))
def repair(
    ctx: RunContext, request: DevRequest, generation: GenerationResult, ci: CIResult, round_number: int
) -> Done[GenerationResult]:
    """Send the CI failure back to the agent on the same conversation and branch — the failing logs' tails and
    a local model's summary of them (a hint; left out when the summary call fails) — and push its fix."""
    p, ledger_run = ctx.ports, ctx.attempt.id
    spent = p.llm.run_cost_usd(ledger_run)
    if spent >= request.budget_usd:
        why = f"run budget spent (${spent:.4f})"
        return Done(generation.model_copy(update={"skipped": why}), "skipped_budget", error=why)
    summary, summarized = _summarize_ci_log(ctx, ci)
    handle = AgentHandle(conversation_id=generation.agent.conversation_id, created=False)
    p.agent.send(handle, repair_instruction(ci, round_number, summary=summary))
    result = p.agent.result(handle, timeout_s=ctx.limits.agent_timeout_s)
    head_sha = generation.head_sha
    if result.verdict == "finished":
        head_sha = p.code_host.push_branch(request.repository, generation.workspace, branch_for(ctx.request_key))
    repaired = generation.model_copy(update={"agent": result, "head_sha": head_sha, "compile": None, "skipped": None})
    return Done(
        repaired,
        result.verdict,
        model=generation.model,
        mode=generation.mode,
        usage=result.usage,
        error=p.llm.redact(result.error) if result.error else None,
        facts=StepFacts(head_sha=head_sha, ledger_cost_usd=round(p.llm.run_cost_usd(ledger_run) - spent, 8)),
        detail={"ci_summary": summarized},
    )


def _summarize_ci_log(ctx: RunContext, ci: CIResult) -> tuple[CILogSummary | None, str]:
    """A local model's summary of the red CI log for the repair instruction (recorded in the ledger under the
    attempt, caller ``summarize_ci_log``), and what became of it. The summary is a hint beside the raw log
    tail, never instead of it: when the call fails or the gateway refuses it, the repair goes on without."""
    call = ci_summary_call(ctx.attempt.id, ci)
    if call is None:
        return None, "no failing log to summarize"
    try:
        reply = ctx.ports.llm.complete(call)
    except (LLMError, SensitiveDataBlocked, BudgetExceeded) as exc:
        return None, ctx.ports.llm.redact(f"not summarized ({type(exc).__name__}: {exc})")[:300]
    summary = ci_log_summary(ctx.ports.llm.redact(reply.content), reply.decision.model)
    if summary is None:
        return None, f"not summarized ({reply.decision.model} answered no text)"
    return summary, f"summarized by {reply.decision.model} ({reply.decision.mode})"


@step("merge", uses=("code_host",))
def merge(
    ctx: RunContext, request: DevRequest, pr: PullRequestInfo, timeout_s: float | None = None
) -> Done[MergeResult]:
    """Squash-merge when allowed, else wait for a human merge; conflicts are reported. The work branch of a
    merged or closed PR is deleted. ``timeout_s``: what is left of a wait that suspended."""
    wait_s = ctx.limits.merge_timeout_s if timeout_s is None else timeout_s
    result = ctx.ports.code_host.merge(request.repository, pr.number, auto_merge=request.auto_merge, timeout_s=wait_s)
    if (result.verdict == "merged" and not result.found) or result.verdict == "closed" or "closed" in result.detail:
        ctx.ports.code_host.delete_branch(request.repository, branch_for(ctx.request_key))  # merged or closed
    return Done(
        result,
        result.verdict,
        error=result.detail or None,
        facts=StepFacts(found=result.found, merge_sha=result.merge_sha, pr_number=pr.number),
    )


@step("wait_for_image", uses=("code_host",))
def wait_for_image(ctx: RunContext, request: DevRequest, merge_sha: str, timeout_s: float | None = None) -> Done[str]:
    """Wait for CI on the merge commit of the base branch and take the image it built (promptship builds
    nothing itself). ``timeout_s``: what is left of a wait that suspended."""
    wait_s = ctx.limits.ci_timeout_s if timeout_s is None else timeout_s
    image = ctx.ports.code_host.image_for(request.repository, merge_sha, request.deploy.container, timeout_s=wait_s)
    return Done(image, "built", facts=StepFacts(image=image, merge_sha=merge_sha))


def _changed_manifests(generation: GenerationResult) -> list[dict]:
    manifests: list[dict] = []
    for name in generation.agent.changed_files:
        path = Path(generation.workspace) / name
        if name.startswith("k8s/") and path.suffix in (".yaml", ".yml") and path.exists():
            manifests += [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]
    return manifests


@step("roll_out", uses=("deployer",))
def roll_out(ctx: RunContext, request: DevRequest, generation: GenerationResult, image: str) -> Done[RolloutResult]:
    """Apply the change's manifests (dry run first, all or none), set the image, wait for the verdict."""
    deployer = ctx.deployer()
    target = request.deploy
    manifests = with_image(_changed_manifests(generation), target.deployment, target.container, image)
    applied = deployer.apply_manifests(request.deploy, manifests) if manifests else None
    kill_point(BETWEEN_APPLY_AND_VERDICT)
    result = deployer.roll_out(request.deploy, image, run_key=ctx.request_key, timeout_s=ctx.limits.rollout_timeout_s)
    return Done(
        result,
        result.verdict,
        error=result.reason or None,
        facts=StepFacts(found=result.found, image=image, revision=result.revision),
        detail={"applied": ", ".join(applied.applied) if applied else None},
    )


@step(
    "check_health",
    uses=("health",),
    label=lambda p: ("check_health:after_rollback", None) if p.get("after_rollback") else ("check_health", None),
)
def check_health(ctx: RunContext, request: DevRequest, after_rollback: bool = False) -> Done[HealthResult]:
    """Probe the service's health URL until enough consecutive successes, or declare it unhealthy."""
    url = ctx.health_url()
    result = ctx.ports.health.check(url)
    return Done(
        result,
        result.verdict,
        error=result.detail or None,
        facts=StepFacts(health_url=url, probes=result.attempts, after_rollback=after_rollback or None),
    )


@step("rollback", uses=("deployer",))
def rollback(ctx: RunContext, request: DevRequest, why: str) -> Done[RollbackResult]:
    """Put the previous revision back and wait until it is complete again."""
    deployer = ctx.deployer()
    rolled = next((r.facts.image for r in ctx.ports.sink.attempt_steps(ctx.attempt.id) if r.name == "roll_out"), None)
    current = deployer.current_image(request.deploy)
    if already_rolled_back(rolled, current):  # this step ran and died before its result was kept: found, not redone
        restored = RollbackResult(verdict="restored", restored_image=current, detail="already restored")
        facts = StepFacts(found=True, restored_image=current)
        return Done(restored, restored.verdict, facts=facts, detail={"why": why})
    result = deployer.rollback(request.deploy, timeout_s=ctx.limits.rollout_timeout_s)
    kill_point(DURING_ROLLBACK)
    return Done(
        result,
        result.verdict,
        error=result.detail or None,
        facts=StepFacts(restored_image=result.restored_image, time_to_restore_s=result.time_to_restore_s),
        detail={"why": why},
    )


@step("write_back", uses=("code_host", "llm"))
def write_back(
    ctx: RunContext, request: DevRequest, pr: PullRequestInfo, merge_sha: str, restored: RollbackResult, why: str
) -> Done[WriteBackResult]:
    """After a rollback, revert the merge on the base branch too: one revert PR per reverted merge commit (its
    body carries the evidence), merged when the request allows auto-merge and its CI is green — a red CI is
    reported, never forced — and linked from the original PR (and from the issue's status comment)."""
    host = ctx.ports.code_host
    evidence = RevertEvidence(
        merge_sha=merge_sha,
        original_pr_url=pr.url,
        why=ctx.ports.llm.redact(why),
        restored_image=restored.restored_image,
        time_to_restore_s=restored.time_to_restore_s,
        run_url=ctx.run_url,
        request_key=ctx.request_key,
    )
    revert = host.open_revert(
        request.repository,
        merge_sha=merge_sha,
        base_branch=request.base_branch,
        title=revert_title(f"promptship request {ctx.request_key}", pr.number),
        body=revert_body(evidence),
        workspace=str(Path(ctx.limits.workspace_root) / f"revert-{merge_sha[:12]}"),
    )
    state, ci_verdict, revert_merge = "open", None, None
    if request.auto_merge:
        ci = host.wait_for_ci(request.repository, revert.head_sha, timeout_s=ctx.limits.ci_timeout_s)
        ci_verdict = ci.verdict
        if ci.verdict == "passed":
            merged = host.merge(
                request.repository, revert.number, auto_merge=True, timeout_s=ctx.limits.merge_timeout_s
            )
            state, revert_merge = ("merged", merged.merge_sha) if merged.verdict == "merged" else (merged.verdict, None)
        else:
            state = f"ci_{ci.verdict}"
    note = revert_comment(revert.url, state) + f"\n\n{revert_marker(merge_sha)}"
    # the original PR gets the link; the issue has it in the request's status comment (tasks/status.py)
    host.upsert_comment(request.repository, pr.number, revert_marker(merge_sha), note)
    result = WriteBackResult(revert=revert, state=state, merge_sha=revert_merge)
    return Done(
        result,
        state,
        facts=StepFacts(
            found=not revert.created,
            pr_number=revert.number,
            pr_url=revert.url,
            ci_verdict=ci_verdict,
            merge_sha=revert_merge,
        ),
    )


__all__ = [
    "write_back",
    "check_health",
    "compile_check",
    "generate_code",
    "merge",
    "open_pull_request",
    "plain",
    "repair",
    "roll_out",
    "rollback",
    "route_request",
    "wait_for_ci",
    "wait_for_image",
]
