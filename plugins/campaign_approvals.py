"""Airflow plugin: the Campaigns view and the campaign decision API (``/campaigns``), the gate's
mark-success listener and the listener that writes each finished run's report on its note."""

from functools import cached_property

from airflow.plugins_manager import AirflowPlugin

from include.orchestrator.airflow.run_notes import RunNoteListener
from include.orchestrator.approval.decisions import GateListener


class CampaignApprovalsPlugin(AirflowPlugin):
    name = "campaign_approvals"
    listeners = [GateListener(), RunNoteListener()]
    # Pages of the plugin's app, embedded by Airflow's UI: a navigation entry, and a tab on every
    # run's page (the reviewer's page: images, copy, recipients, deadline, decision, outcome).
    external_views = [
        {"name": "Campaigns", "href": "/campaigns/ui/campaigns", "url_route": "campaigns", "destination": "nav"},
        {
            "name": "Campaign",
            "href": "/campaigns/ui/runs/{DAG_ID}/{RUN_ID}",
            "url_route": "campaign-run",
            "destination": "dag_run",
        },
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict]:  # type: ignore[override]  # AirflowPlugin declares a plain class attribute; Airflow reads it as one
        # Built on first use, in the API server only: every task process loads plugins too, and
        # the app's imports would cost each of them ~0.9 s (measured with -X importtime).
        from include.orchestrator.web.app import create_app

        return [{"app": create_app(), "url_prefix": "/campaigns", "name": "Campaigns"}]
