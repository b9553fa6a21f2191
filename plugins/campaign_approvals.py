"""Airflow plugin: the campaign decision API (``/campaigns``), the gate's mark-success listener and
the listener that writes each finished run's report on its note."""

from functools import cached_property

from airflow.plugins_manager import AirflowPlugin

from include.orchestrator.decisions import GateListener
from include.orchestrator.run_notes import RunNoteListener


class CampaignApprovalsPlugin(AirflowPlugin):
    name = "campaign_approvals"
    listeners = [GateListener(), RunNoteListener()]

    @cached_property
    def fastapi_apps(self) -> list[dict]:
        # Built on first use, in the API server only: every task process loads plugins too, and
        # the app's imports would cost each of them ~0.9 s (measured with -X importtime).
        from include.orchestrator.decisions import create_app

        return [{"app": create_app(), "url_prefix": "/campaigns", "name": "Campaign approvals"}]
