"""The pull request a request opens: the LLM call that writes its text, and the title and body made from the
model's answer — redacted by the gate, referencing the issue, carrying the request's marker. Pure."""

from __future__ import annotations

from collections.abc import Callable

from promptship.domain.request import DevRequest, pr_marker
from promptship.domain.results import GenerationResult, LLMCall, LLMMessage
from promptship.domain.writeback import issue_reference


def pr_text_call(run_key: str, request: DevRequest, generation: GenerationResult) -> LLMCall:
    """The LLM call that writes a PR's title and description (docs class; local only for sensitive requests)."""
    return LLMCall(
        run_key=run_key,
        step="open_pull_request",
        task_class="docs",
        force_local=request.sensitive,
        messages=(
            LLMMessage(
                role="system", content="Write a pull request title on the first line, then a short description."
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


def pr_title_and_body(redact: Callable[[str], str], request: DevRequest, key: str, content: str) -> tuple[str, str]:
    """The PR's title (first line, at most 120 characters) and description from the model's text, both
    redacted by the gate: whatever the model repeats of the request never reaches the code host."""
    title_line, _, rest = content.strip().partition("\n")
    title = redact(title_line.strip("# ").strip() or request.prompt)[:120]
    reference = issue_reference(request.issue_number, closes=request.closes_issue)
    if request.parent and request.source_pr:
        reference = f"Follows up #{request.source_pr} (request `{request.parent}`)."
    body = (
        f"{rest.strip()}\n\n" + (f"{reference}\n\n" if reference else "") + "---\n"
        f"Opened by promptship for request `{key}` (requested by {request.requester}).\n"
        f"{pr_marker(key)}\n"
    )
    return title, redact(body)
