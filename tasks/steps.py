"""The steps of the dev cycle as Prefect tasks.

Each task: asks ``services()`` for its ports, calls them, records a ``StepRecord`` in the store, and returns
``(result, record)``. Every task is cached by run key + step (+ round), so a second run of the same request
— or a resumed crashed run — returns the earlier result instead of repeating a side effect.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from promptship.adapters.compile_check import inspect_repository
from promptship.domain.instructions import agent_instruction, repair_instruction
from promptship.domain.report import StepRecord
from promptship.domain.request import DevRequest, branch_for, conversation_id_for, pr_marker
from promptship.domain.results import (
    AgentHandle,
    AgentTask,
    CIResult,
    GenerationResult,
    HealthResult,
    LLMCall,
    LLMMessage,
    MergeResult,
    PullRequestInfo,
    RollbackResult,
    RolloutResult,
    RouteDecision,
)
from promptship.errors import ConfigError
from promptship.ports import Cluster
from promptship.wiring import services
from tasks._support import durable_task, keyed, now, step_record


@durable_task("route", keyed("route"))
def route_request(request: DevRequest) -> tuple[RouteDecision, StepRecord]:
    """Classify the request and choose the model (local or cloud) the code agent will use, and why."""
    s = services()
    t0 = now()
    s.llm.open_run(request.run_key, budget_usd=request.budget_usd, repository=request.repository)
    decision = s.llm.route(request.prompt, task_class=request.task_class, force_local=request.sensitive)
    record = step_record(
        request.run_key,
        "route",
        t0,
        "routed",
        model=decision.model,
        mode=decision.mode,
        reason=decision.reason,
        task_class=decision.task_class,
        sensitive=decision.sensitive,
    )
    s.sink.record_step(record)
    return decision, record


@durable_task("generate_code", keyed("generate_code"))
def generate_code(request: DevRequest, decision: RouteDecision) -> tuple[GenerationResult, StepRecord]:
    """Check out the repository on the run's branch, let the code agent work, and push what it committed."""
    s = services()
    t0 = now()
    key = request.run_key
    branch = branch_for(key)
    workspace = s.code_host.prepare_workspace(
        request.repository, request.base_branch, branch, str(s.settings.workspace_root() / key)
    )
    access = s.llm.agent_access(key, decision, request.budget_usd)
    agent_task = AgentTask(
        run_key=key,
        conversation_id=conversation_id_for(key),
        instruction=agent_instruction(request, branch=branch, conventions=inspect_repository(workspace)),
        workspace=workspace,
        model=access.model,
        base_url=access.base_url,
        budget_usd=max(0.0, request.budget_usd - s.llm.run_cost_usd(key)),
        max_iterations=s.settings.pipeline.agent_max_iterations,
        timeout_s=s.settings.pipeline.agent_timeout_s,
    )
    spent_before = s.llm.run_cost_usd(key)
    handle = s.agent.start(agent_task, access)
    result = s.agent.result(handle, timeout_s=s.settings.pipeline.agent_timeout_s)
    gateway_cost = round(s.llm.run_cost_usd(key) - spent_before, 8)
    head_sha = None
    if result.verdict == "finished":
        head_sha = s.code_host.push_branch(request.repository, workspace, branch)
    generation = GenerationResult(
        agent=result, head_sha=head_sha, workspace=workspace, model=decision.model, mode=decision.mode
    )
    record = step_record(
        key,
        "generate_code",
        t0,
        result.verdict,
        model=decision.model,
        mode=decision.mode,
        reason=decision.reason,
        usage=result.usage,
        error=s.llm.redact(result.error) if result.error else None,
        conversation_id=result.conversation_id,
        changed_files=len(result.changed_files),
        resumed=not handle.created,
        head_sha=head_sha,
        gateway_cost_usd=gateway_cost,
    )
    s.sink.record_step(record)
    return generation, record


@durable_task("compile_check", keyed("compile_check", "label"), retries=0)
def compile_check(
    request: DevRequest, generation: GenerationResult, label: str = "compile_check"
) -> tuple[GenerationResult, StepRecord]:
    """Check that what the agent produced builds (the seed's compile-rate KPI)."""
    s = services()
    t0 = now()
    result = s.compiler.check(generation.workspace, generation.agent.changed_files)
    record = step_record(
        request.run_key,
        label,
        t0,
        "compiled" if result.compiled else "not_compiled",
        error=None if result.compiled else result.output[-500:],
        command=result.command,
    )
    s.sink.record_step(record)
    return generation.model_copy(update={"compile": result}), record


@durable_task("open_pull_request", keyed("open_pull_request"))
def open_pull_request(request: DevRequest, generation: GenerationResult) -> tuple[PullRequestInfo, StepRecord]:
    """Find the run's PR, or write its title and body through the LLM gateway (docs class) and open it."""
    s = services()
    t0 = now()
    key = request.run_key
    existing = s.code_host.find_pull_request(request.repository, key)
    model = mode = reason = None
    usage = None
    if existing is None:
        reply = s.llm.complete(
            LLMCall(
                run_key=key,
                step="open_pull_request",
                task_class="docs",
                force_local=request.sensitive,
                messages=(
                    LLMMessage(
                        role="system",
                        content="Write a pull request title on the first line, then a short description.",
                    ),
                    LLMMessage(
                        role="user",
                        content=f"Request: {request.prompt}\nChanged files: "
                        + ", ".join(generation.agent.changed_files)
                        + f"\nAgent summary: {generation.agent.final_message}",
                    ),
                ),
                max_tokens=400,
            )
        )
        title_line, _, rest = reply.content.strip().partition("\n")
        title = (title_line.strip("# ").strip() or request.prompt)[:120]
        body = (
            f"{rest.strip()}\n\n---\nOpened by promptship for run `{key}` (requested by {request.requester}).\n"
            f"{pr_marker(key)}\n"
        )
        pr = s.code_host.find_or_create_pull_request(
            request.repository,
            run_key=key,
            branch=branch_for(key),
            base_branch=request.base_branch,
            title=title,
            body=s.llm.redact(body),
            labels=request.labels,
        )
        model, mode, reason, usage = reply.model, reply.decision.mode, reply.decision.reason, reply.usage
    else:
        pr = existing
    record = step_record(
        key,
        "open_pull_request",
        t0,
        "opened" if pr.created else "found",
        model=model,
        mode=mode,
        reason=reason,
        usage=usage,
        pr_number=pr.number,
        pr_url=pr.url,
    )
    s.sink.record_step(record)
    return pr, record


@durable_task("wait_for_ci", keyed("wait_for_ci", "round_number", "sha"))
def wait_for_ci(request: DevRequest, sha: str, round_number: int) -> tuple[CIResult, StepRecord]:
    """Wait for the combined CI verdict of ``sha`` (checks and statuses)."""
    s = services()
    t0 = now()
    ci = s.code_host.wait_for_ci(request.repository, sha, timeout_s=s.settings.pipeline.ci_timeout_s)
    record = step_record(
        request.run_key,
        f"wait_for_ci#{round_number}",
        t0,
        ci.verdict,
        sha=sha,
        failing=", ".join(c.name for c in ci.failing) or None,
    )
    s.sink.record_step(record)
    return ci, record


@durable_task("repair", keyed("repair", "round_number"))
def repair(
    request: DevRequest, generation: GenerationResult, ci: CIResult, round_number: int
) -> tuple[GenerationResult, StepRecord]:
    """Send the CI failure back to the agent on the same conversation and branch, and push its fix."""
    s = services()
    t0 = now()
    key = request.run_key
    spent = s.llm.run_cost_usd(key)
    if spent >= request.budget_usd:
        record = step_record(
            key, f"repair#{round_number}", t0, "skipped_budget", error=f"run budget spent (${spent:.4f})"
        )
        s.sink.record_step(record)
        return generation, record
    handle = AgentHandle(conversation_id=generation.agent.conversation_id, created=False)
    s.agent.send(handle, repair_instruction(ci, round_number))
    result = s.agent.result(handle, timeout_s=s.settings.pipeline.agent_timeout_s)
    gateway_cost = round(s.llm.run_cost_usd(key) - spent, 8)
    head_sha = generation.head_sha
    if result.verdict == "finished":
        head_sha = s.code_host.push_branch(request.repository, generation.workspace, branch_for(key))
    repaired = generation.model_copy(update={"agent": result, "head_sha": head_sha, "compile": None})
    record = step_record(
        key,
        f"repair#{round_number}",
        t0,
        result.verdict,
        model=generation.model,
        mode=generation.mode,
        usage=result.usage,
        error=s.llm.redact(result.error) if result.error else None,
        sha=head_sha,
        gateway_cost_usd=gateway_cost,
    )
    s.sink.record_step(record)
    return repaired, record


@durable_task("merge", keyed("merge"))
def merge(request: DevRequest, pr: PullRequestInfo) -> tuple[MergeResult, StepRecord]:
    """Squash-merge when allowed, else wait for a human merge; conflicts are reported."""
    s = services()
    t0 = now()
    result = s.code_host.merge(
        request.repository, pr.number, auto_merge=request.auto_merge, timeout_s=s.settings.pipeline.merge_timeout_s
    )
    record = step_record(
        request.run_key, "merge", t0, result.verdict, error=result.detail or None, merge_sha=result.merge_sha
    )
    s.sink.record_step(record)
    return result, record


@durable_task("build_image", keyed("build_image"))
def build_image(request: DevRequest, merge_sha: str) -> tuple[str, StepRecord]:
    """Wait for CI on the merge commit of the base branch and take the image it built."""
    s = services()
    t0 = now()
    image = s.code_host.image_for(
        request.repository, merge_sha, request.deploy.container, timeout_s=s.settings.pipeline.ci_timeout_s
    )
    record = step_record(request.run_key, "build_image", t0, "built", image=image, sha=merge_sha)
    s.sink.record_step(record)
    return image, record


def _deployer(request: DevRequest) -> Cluster:
    """The one deployer of the request's environment: the cluster (push) or the GitOps repository."""
    s = services()
    if request.deploy_mode == "push":
        return s.cluster
    if s.gitops is None:
        raise ConfigError(
            "deploy_mode 'gitops' needs a GitOps repository: set PROMPTSHIP_KUBE__GITOPS_REPO_URL "
            "(and PROMPTSHIP_KUBE__GITOPS_APPLICATION when Argo CD runs)"
        )
    return s.gitops


def _changed_manifests(generation: GenerationResult) -> list[dict]:
    manifests: list[dict] = []
    for name in generation.agent.changed_files:
        path = Path(generation.workspace) / name
        if name.startswith("k8s/") and path.suffix in (".yaml", ".yml") and path.exists():
            manifests += [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]
    return manifests


@durable_task("roll_out", keyed("roll_out"))
def roll_out(request: DevRequest, generation: GenerationResult, image: str) -> tuple[RolloutResult, StepRecord]:
    """Apply the change's manifests (dry run first, all or none), set the image, wait for the verdict."""
    s = services()
    t0 = now()
    cluster = _deployer(request)
    manifests = _changed_manifests(generation)
    applied = cluster.apply_manifests(request.deploy, manifests) if manifests else None
    result = cluster.roll_out(
        request.deploy, image, run_key=request.run_key, timeout_s=s.settings.pipeline.rollout_timeout_s
    )
    record = step_record(
        request.run_key,
        "roll_out",
        t0,
        result.verdict,
        error=result.reason or None,
        image=image,
        revision=result.revision,
        applied=", ".join(applied.applied) if applied else None,
    )
    s.sink.record_step(record)
    return result, record


def _health_url(request: DevRequest) -> str:
    url = request.deploy.health_url or services().settings.health.url
    if not url:
        raise ConfigError(
            "no health URL: set deploy.health_url in the request or PROMPTSHIP_HEALTH__URL in the environment"
        )
    return url


@durable_task("check_health", keyed("check_health", "label"))
def check_health(request: DevRequest, label: str = "check_health") -> tuple[HealthResult, StepRecord]:
    """Probe the service's health URL until enough consecutive successes, or declare it unhealthy."""
    s = services()
    t0 = now()
    url = _health_url(request)
    result = s.health.check(url)
    record = step_record(
        request.run_key, label, t0, result.verdict, error=result.detail or None, url=url, attempts=result.attempts
    )
    s.sink.record_step(record)
    return result, record


@durable_task("rollback", keyed("rollback"))
def rollback(request: DevRequest, why: str) -> tuple[RollbackResult, StepRecord]:
    """Put the previous revision back and wait until it is complete again."""
    s = services()
    t0 = now()
    result = _deployer(request).rollback(request.deploy, timeout_s=s.settings.pipeline.rollout_timeout_s)
    record = step_record(
        request.run_key,
        "rollback",
        t0,
        result.verdict,
        error=result.detail or None,
        why=why,
        restored_image=result.restored_image,
        time_to_restore_s=result.time_to_restore_s,
    )
    s.sink.record_step(record)
    return result, record
