"""Airflow plugin: the campaign decision API (``/campaigns``) and the gate's mark-success listener."""

from airflow.plugins_manager import AirflowPlugin

from include.orchestrator.decisions import GateListener, create_app


class CampaignApprovalsPlugin(AirflowPlugin):
    name = "campaign_approvals"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/campaigns", "name": "Campaign approvals"}]
    listeners = [GateListener()]
