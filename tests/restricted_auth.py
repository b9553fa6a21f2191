"""An auth manager for tests that hides some DAGs from some users.

Airflow's simple auth manager lets every role read every DAG; the auth managers users run in
production (FAB, Keycloak, a team setup) grant DAGs per user. This one is the simple auth
manager plus one rule, read from ``CAMPAIGN_TEST_HIDDEN`` (``user:dag_id,...``): that user may
not touch that DAG. It lets the tests check that the Campaigns view asks the auth manager
about every DAG it shows.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class RestrictedAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        hidden = {entry.strip() for entry in os.environ.get("CAMPAIGN_TEST_HIDDEN", "").split(",") if entry.strip()}
        if details is not None and details.id and f"{user.get_name()}:{details.id}" in hidden:
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
