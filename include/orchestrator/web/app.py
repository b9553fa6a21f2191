"""The plugin's FastAPI app, mounted by the API server at ``/campaigns``.

- ``/api/v1/approvals/...``: the campaign decision API (``approval/decisions.py``).
- ``/api/v1/campaigns``, ``/api/v1/campaigns/{dag_id}``, ``/api/v1/runs/{dag_id}/{run_id}``
  (and ``.../images/{channel}``): the Campaigns view's data, as JSON for scripts.
- ``/ui/campaigns`` and ``/ui/runs/{dag_id}/{run_id}``: the same as pages, which Airflow's UI
  embeds (``external_views`` of ``plugins/campaign_approvals.py``).

Airflow's auth guards every route but the static files: a bearer token or the UI's session
cookie, then the auth manager's DAG permissions (lists show only readable DAGs; a run needs
read access to its DAG; deciding needs what answering the Required Actions form needs).
"""

from pathlib import Path
from typing import Any

STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {"campaigns.js": "text/javascript", "campaigns.css": "text/css"}
# The pages have no inline script; styles may be inline (state colours).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'self'; base-uri 'none'"
)


def create_app() -> Any:
    from fastapi import FastAPI

    from include.orchestrator.approval import decisions

    app = FastAPI(title="Campaigns", description="Campaigns, their runs and their approvals; decide on waiting runs.")
    decisions.add_routes(app)
    add_view_routes(app)
    return app


def _links(request: Any) -> Any:
    from include.orchestrator.web.pages import Links

    app = str(request.scope.get("root_path") or "")
    return Links(app, app.removesuffix("/campaigns"))


def add_view_routes(app: Any) -> None:  # noqa: C901 -- route registration: the nested handlers share its imports and helpers
    from fastapi import Depends, HTTPException, Query, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from include.orchestrator.airflow.compat import (
        DagAccessEntity,
        DagDetails,
        GetUserDep,
        SessionDep,
        get_auth_manager,
        requires_access_dag,
    )
    from include.orchestrator.approval.decisions import user_roles
    from include.orchestrator.web import campaigns as view
    from include.orchestrator.web import pages

    read_run = [Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))]

    def html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(
            text,
            status,
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def problem(request: Request, exc: StarletteHTTPException) -> Any:
        # A page answers with a page (a person reads it in Airflow's iframe); the API with JSON.
        if "/ui/" in request.url.path:
            return html(pages.problem_page(exc.status_code, str(exc.detail), _links(request)), exc.status_code)
        return await http_exception_handler(request, exc)

    def readable(user: Any, session: Any) -> set[str]:
        return get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)

    def campaign_dag(dag_id: str) -> None:
        if not dag_id.startswith("campaign_"):
            raise HTTPException(404, f"{dag_id!r} is not a campaign DAG")

    def one_run(session: Any, dag_id: str, run_id: str) -> Any:
        campaign_dag(dag_id)
        found = view.run(session, dag_id, run_id)
        if found is None:
            raise HTTPException(404, f"no run {run_id!r} of DAG {dag_id!r}")
        return found

    def review_for(session: Any, run: Any, user: Any) -> Any:
        found = view.review(session, run, str(user.get_id()), user.get_name(), user_roles(user))
        if found.may_decide and not get_auth_manager().is_authorized_dag(
            method="PUT", access_entity=DagAccessEntity.HITL_DETAIL, details=DagDetails(id=run.dag_id), user=user
        ):
            found.may_decide, found.why_not = False, "your Airflow role may not answer required actions on this DAG"
        return found

    # --- JSON ----------------------------------------------------------------------------------
    @app.get("/api/v1/campaigns")
    def list_campaigns(user: GetUserDep, session: SessionDep, runs: int = Query(view.RECENT_RUNS, ge=0, le=50)) -> dict[str, Any]:
        """Every campaign you may read, with its recent runs, and every run waiting for approval."""
        dag_ids = readable(user, session)
        return {
            "campaigns": [c.model_dump(mode="json") for c in view.campaigns(session, dag_ids, runs)],
            "waiting": [r.model_dump(mode="json") for r in view.waiting_approvals(session, dag_ids)],
        }

    @app.get("/api/v1/campaigns/{dag_id}", dependencies=read_run)
    def get_campaign(dag_id: str, session: SessionDep, limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
        campaign_dag(dag_id)
        found = view.campaigns(session, {dag_id}, limit)  # the campaign with its latest runs, brief as in the list
        if not found:
            raise HTTPException(404, f"no campaign DAG {dag_id!r}")
        return found[0].model_dump(mode="json")

    @app.get("/api/v1/runs/{dag_id}/{run_id}", dependencies=read_run)
    def get_run(dag_id: str, run_id: str, user: GetUserDep, session: SessionDep) -> dict[str, Any]:
        run = one_run(session, dag_id, run_id)
        return {**run.model_dump(mode="json"), "review": review_for(session, run, user).model_dump(mode="json")}

    @app.get("/api/v1/runs/{dag_id}/{run_id}/images/{channel}", dependencies=read_run)
    def get_image(dag_id: str, run_id: str, channel: str, session: SessionDep) -> Response:
        """The image a run rendered for a channel, read from the asset store and checked against its hash."""
        from include.orchestrator.backends.assets import open_assets
        from include.orchestrator.domain.ports import Image

        campaign_dag(dag_id)  # no run summary needed: the image's record says it all, or nothing is there
        record = view.image_url_of(session, dag_id, run_id, channel)
        if record is None:
            raise HTTPException(404, f"run {run_id!r} has no {channel} image")
        try:
            data = open_assets().read_image(Image.model_validate(record)).data
        except FileNotFoundError as exc:
            raise HTTPException(410, str(exc)) from None
        except ValueError as exc:  # changed since rendered: never show a reviewer something else
            raise HTTPException(409, str(exc)) from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    # --- pages ---------------------------------------------------------------------------------
    @app.get("/ui/campaigns", response_class=HTMLResponse)
    def campaigns_page(request: Request, user: GetUserDep, session: SessionDep) -> HTMLResponse:
        dag_ids = readable(user, session)
        return html(pages.overview(view.campaigns(session, dag_ids), view.waiting_approvals(session, dag_ids), _links(request)))

    @app.get("/ui/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=read_run)
    def run_page(request: Request, dag_id: str, run_id: str, user: GetUserDep, session: SessionDep) -> HTMLResponse:
        run = one_run(session, dag_id, run_id)
        campaign = view.campaign_file(dag_id)
        name = campaign.name if campaign else dag_id
        return html(pages.run_page(name, run, review_for(session, run, user), _links(request)))

    @app.get("/ui/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_TYPES:
            raise HTTPException(404, "no such file")
        return Response(
            (STATIC / name).read_bytes(), media_type=STATIC_TYPES[name], headers={"Cache-Control": "public, max-age=300"}
        )
