"""The Prefect UI as a user meets it, in Debian's headless chromium (Playwright).

A Prefect server with its UI, the project's deployments registered from prefect.yaml (``deploy_project``), and
a real process worker whose flow runs use the durable fakes (``tests/flows/durable_fakes.py``: fast, no
external service). In the browser:

- the ``dev-cycle`` deployment's Run → Custom run form shows ``DevRequest``'s fields with their descriptions
  (read from the model here, not written down); the prompt and repository are typed in and the run is
  submitted from the browser; it reaches a final state with a verdict;
- while the run waits on CI (the fake holds it there), its page shows the progress artifact at that stage;
- the finished run's page lists its progress and report artifacts, and the report's page renders its markdown;
- the KPI artifact (one ``kpi-report`` run on the same server) shows its charts, every image loaded;
- the ``policy-review`` artifact (one run of that deployment, by the same worker, on a generated month of
  recorded calls and outcomes in a store of its own): its markdown tables render and its chart loads;
- no page shows "Can't connect to Server API".

Screenshots of every page: ``tests/ui/artifacts/`` (paths printed).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from promptship.domain.request import DevRequest
from tests.chatapp.conftest import CHROMIUM, CHROMIUM_FLAGS
from tests.conftest import REPO_ROOT, require

pytestmark = [pytest.mark.browser, pytest.mark.flow]

ARTIFACTS = REPO_ROOT / "tests" / "ui" / "artifacts"
CANT_CONNECT = re.compile(r"can.t connect", re.I)
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _label(field: str) -> re.Pattern[str]:
    """The form's label of a ``DevRequest`` field: its schema title, "(Optional)" when it has a default."""
    title = re.escape(DevRequest.model_json_schema()["properties"][field]["title"])
    optional = r" \(Optional\)" if not DevRequest.model_fields[field].is_required() else ""
    return re.compile(rf"^{title}{optional}$")


def _merged_by_a_person(fakes: Path, log: Path) -> None:
    from promptship_sandbox.durable_fakes import JsonState

    state = JsonState(fakes)
    _wait_for(lambda: state.read().get("prs"), "the run's pull request", 120, log)
    with state.edit() as d:
        for pr in d["prs"].values():
            d.setdefault("pr_states", {})[str(pr["number"])] = "merged"


def _wait_for(predicate: Callable[[], Any], what: str, timeout_s: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server with its UI, the deployments, and a worker running flow runs on the durable fakes."""
    require("chromium", CHROMIUM.exists(), "run `make chromium` (Debian's chromium at /usr/bin/chromium)")
    from promptship_sandbox.prefect_server import deploy_project, running_prefect_server, running_worker, using_prefect

    state = tmp_path_factory.mktemp("prefect-ui")
    fakes = state / "fakes"
    fakes.mkdir()
    env = {
        "PROMPTSHIP_SERVICES_FACTORY": "tests.flows.durable_fakes:services_from_env",
        "PROMPTSHIP_TEST_FAKES_DIR": str(fakes),
        # the kpi-report flow reads the store the durable fakes write (their home), like a real worker's
        "PROMPTSHIP_HOME": str(fakes / "home"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # the run is held inside the CI step to show that stage: it must not first look for CI and suspend
        # (suspension is tests/flows/test_suspend.py's; the look is not a step, so the page would show the PR stage)
        "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "0",
    }
    t0 = time.monotonic()
    with running_prefect_server(state / "server", ui=True) as server:
        t1 = time.monotonic()
        deploy_project(server, REPO_ROOT)
        t2 = time.monotonic()
        worker_log = state / "worker.log"
        with running_worker(server, REPO_ROOT, worker_log, env=env), using_prefect(server):
            print(f"prefect server with UI at {server.url}: started in {t1 - t0:.1f} s, deployed in {t2 - t1:.1f} s")
            yield {"server": server, "worker_log": worker_log, "fakes": fakes}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a shared 2-core machine: the SPA's first render can take seconds
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        context.close()


def _visited(page: Any, name: str) -> Path:
    """The page as it is now: no "Can't connect" toast or text, and a full-page screenshot."""
    from playwright.sync_api import expect

    expect(page.get_by_text(CANT_CONNECT)).to_have_count(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _form_field(page: Any, field: str) -> Any:
    """The input of a ``DevRequest`` field in the form: the textbox in the property its label names. (The
    form's ``<label for=…>`` names no element id, so ``get_by_label`` finds nothing: the property is found by
    its label's text, then its textbox by role.)"""
    label = page.locator(".schema-form-property__label").filter(has_text=_label(field))
    prop = page.locator(".schema-form-property").filter(has=label).last  # the innermost: the field itself
    return prop.get_by_role("textbox")


def _final_run(flow_run_id: Any, log: Path) -> Any:
    from prefect.client.orchestration import get_client

    def final() -> Any:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        return run if run.state_type is not None and run.state_type.value in FINAL else None

    return _wait_for(final, f"flow run {flow_run_id} to end", 150, log)


def test_a_run_started_from_the_ui_form_shows_its_report_and_the_kpi_charts_load(
    stack: dict[str, Any], page: Any
) -> None:
    from playwright.sync_api import expect
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, DeploymentFilter, DeploymentFilterId

    server, log = stack["server"], stack["worker_log"]
    with get_client(sync_client=True) as client:
        dev = client.read_deployment_by_name("dev-cycle/dev-cycle")

    # -- the deployment's custom run form: DevRequest's fields, described -------------------------------------
    page.goto(f"{server.url}/deployments/deployment/{dev.id}")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    for field in ("prompt", "repository", "base_branch", "auto_merge", "budget_usd"):
        expect(page.locator(".schema-form-property__label").filter(has_text=_label(field))).to_have_count(1)
    for field in ("prompt", "repository", "auto_merge"):
        description = DevRequest.model_fields[field].description
        assert description
        expect(page.get_by_text(description, exact=True)).to_be_visible()
    prompt = f"Add a GET /version endpoint, asked from the Prefect UI ({uuid.uuid4().hex[:6]})"
    _form_field(page, "prompt").fill(prompt)
    _form_field(page, "repository").fill("demo/chat-app")
    _visited(page, "1-dev-cycle-custom-run-form")
    hold_ci = stack["fakes"] / "hold-ci"
    hold_ci.write_text("")  # the run waits inside CI until the page has shown that stage
    creations: list[int] = []  # the status of each create_flow_run call the form made
    page.on("response", lambda r: creations.append(r.status) if r.url.endswith("/create_flow_run") else None)
    page.get_by_role("button", name="Submit", exact=True).click()

    def from_the_form() -> list[Any]:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dev.id])))
        return [r for r in runs if r.parameters.get("request", {}).get("prompt") == prompt]

    def submitted() -> Any:
        return next(iter(from_the_form()), None)

    try:
        created = _wait_for(submitted, "the run submitted from the form", 60, log)
    except AssertionError:
        _visited(page, "1-dev-cycle-submit-failed")  # what the form said instead
        if 201 in creations:
            raise
        # the server did not take the submission (its API status toast, "Oops. Something went wrong", once in CI
        # while the machine was busy): a person submits again, once — and still exactly one run may come of it
        print(f"create_flow_run answers: {creations or 'none'}; submitting again")
        page.get_by_role("button", name="Submit", exact=True).click()
        created = _wait_for(submitted, f"the run submitted from the form (answers {creations})", 60, log)
    assert len(from_the_form()) == 1, creations  # one submission, one run

    # -- while it waits on CI, its page says so ------------------------------------------------------------
    _wait_for(lambda: (stack["fakes"] / "at-ci").exists(), "the run to wait on CI", 120, log)
    page.goto(f"{server.url}/runs/flow-run/{created.id}")
    page.get_by_text("Artifacts", exact=True).first.click()
    expect(page.get_by_text("Stage 5/10 · wait_for_ci#1 — waiting for CI", exact=True)).to_be_visible()
    _visited(page, "2-flow-run-waiting-on-ci")
    hold_ci.unlink()
    _merged_by_a_person(stack["fakes"], log)  # the form's request has no auto-merge: a person merges its PR
    run = _final_run(created.id, log)
    assert run.state_type.value == "COMPLETED", f"{run.state_type}: {run.state and run.state.message}"
    request = DevRequest.model_validate(run.parameters["request"])
    assert (request.prompt, request.repository) == (prompt, "demo/chat-app")
    assert "outcome:deployed" in run.tags  # the verdict, as the run's tag

    # -- the finished run's page: its artifacts, the report rendered -------------------------------------------
    key = request.run_key
    page.goto(f"{server.url}/runs/flow-run/{run.id}")
    expect(page.get_by_text(run.name, exact=True).first).to_be_visible()
    _visited(page, "3-flow-run")
    page.get_by_text("Artifacts", exact=True).first.click()
    expect(page.get_by_text("Stage 10/10 · report — finished: deployed", exact=True)).to_be_visible()
    expect(page.get_by_text(f"run-{key}", exact=True)).to_be_visible()
    _visited(page, "4-flow-run-artifacts")
    page.get_by_text(f"run-{key}", exact=True).click()
    expect(page.get_by_role("heading", name=f"promptship run {key} — deployed")).to_be_visible()
    expect(page.get_by_text("Outcome: deployed.", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="What happened")).to_be_visible()
    _visited(page, "5-report-artifact")

    # -- the KPI artifact: its charts load ----------------------------------------------------------------------
    with get_client(sync_client=True) as client:
        kpi = client.read_deployment_by_name("kpi-report/kpi-report")
        kpi_run = client.create_flow_run_from_deployment(kpi.id, parameters={"days": 30})
    assert _final_run(kpi_run.id, log).state_type.value == "COMPLETED"
    with get_client(sync_client=True) as client:
        only_kpis = ArtifactFilter(key=ArtifactFilterKey(any_=["promptship-kpis"]))
        (kpis,) = client.read_latest_artifacts(artifact_filter=only_kpis)
    charts = str(kpis.data).count("](data:image/png;base64,")
    assert charts >= 2, str(kpis.data)[:500]
    page.goto(f"{server.url}/artifacts/artifact/{kpis.latest_id}")
    expect(page.get_by_role("heading", name=re.compile(r"^promptship KPIs — "))).to_be_visible()
    images = page.locator("img[src^='data:image/png']")
    expect(images).to_have_count(charts)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll(\"img[src^='data:image/png']\")).every(i => i.complete)"
    )
    widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == charts and all(w > 0 for w in widths), widths
    _visited(page, "6-kpi-artifact")


def test_the_policy_review_artifact_renders_its_tables_and_chart(
    stack: dict[str, Any], page: Any, tmp_path: Path
) -> None:
    """The weekly ``policy-review`` deployment run by the module's worker on a recorded history (a store of its
    own: the run's environment points PROMPTSHIP_HOME there), then its artifact opened in the UI."""
    from playwright.sync_api import expect
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    from promptship.settings import Settings
    from promptship.store.ledger import CostLedger
    from promptship.wiring import build_store
    from tests.replay.history import WEEKS_1_2, write_month

    server, log = stack["server"], stack["worker_log"]
    home = tmp_path / "history-home"
    store = build_store(Settings(home=home))
    month = write_month(store, CostLedger(store.engine))
    store.engine.dispose()
    policy = tmp_path / "in-force.yaml"
    policy.write_text(WEEKS_1_2.to_yaml(), encoding="utf-8")
    env = {"PROMPTSHIP_HOME": str(home), "PROMPTSHIP_LLM__POLICY_FILE": str(policy)}
    with get_client(sync_client=True) as client:
        review = client.read_deployment_by_name("policy-review/policy-review")
        created = client.create_flow_run_from_deployment(
            review.id, parameters={"days": 3650, "success_floor": 0.8}, job_variables={"env": env}
        )
    run = _final_run(created.id, log)
    assert run.state_type.value == "COMPLETED", f"{run.state_type}: {run.state and run.state.message}"
    with get_client(sync_client=True) as client:
        only_review = ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=["promptship-policy-review"]))
        (artifact,) = client.read_latest_artifacts(artifact_filter=only_review)
    data = str(artifact.data)
    assert f"- calls: {len(month.calls)}\n" in data and "- self-check: ok" in data  # the run read that history
    assert data.count("](data:image/png;base64,") == 1

    page.goto(f"{server.url}/artifacts/artifact/{artifact.latest_id}")
    expect(page.get_by_role("heading", name="promptship policy review")).to_be_visible()
    self_check = "Replay under the recording policies (self-check): recording"
    expect(page.get_by_role("heading", name=self_check)).to_be_visible()
    expect(page.get_by_role("heading", name="Outcomes per task class × model")).to_be_visible()
    # the markdown tables are rendered as tables: header cells and body cells, not pipes in a paragraph
    expect(page.locator("th", has_text="class × model then → now").first).to_be_visible()
    expect(page.locator("th", has_text="USD / merged PR")).to_have_count(1)
    expect(page.locator("td", has_text="tests × gpt-4o → mistral").first).to_be_visible()
    outcome = page.locator("tr").filter(has=page.locator("td", has_text=re.compile(r"^29/30 \[")))
    expect(outcome.filter(has=page.locator("td", has_text=re.compile(r"^mistral$")))).to_have_count(1)
    assert not page.get_by_text(re.compile(r"^\| class \|")).count()  # no table left as raw markdown
    # the chart: one PNG, loaded
    chart = page.locator("img[src^='data:image/png']")
    expect(chart).to_have_count(1)
    page.wait_for_function("() => document.querySelector(\"img[src^='data:image/png']\").complete")
    assert chart.evaluate("i => i.naturalWidth") > 0
    _visited(page, "7-policy-review-artifact")
