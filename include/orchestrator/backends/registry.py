"""Which backend serves a port: decided by the Airflow connection configured for it.

Every port has a default connection id (``campaign_<port>``; a campaign file may name another).
The connection's type picks the backend: ``fs`` means a local backend living in the folder given
by the ``path`` extra (relative paths are under ``$AIRFLOW_HOME``, or under the project folder
with ``"relative_to": "project"``), ``smtp`` an SMTP server, and so on. A missing connection or
an unsupported type is an error naming the connection and what would work, never a silent fallback.
Connections are read at execute time only, never at parse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from include.orchestrator.connections import flag, get_connection, local_path
from include.orchestrator.domain.model import PORTS, Port
from include.orchestrator.errors import ConnectionConfigError

DEFAULT_CONN_IDS: dict[str, str] = {port: f"campaign_{port}" for port in PORTS}


# One small factory per (port, connection type); imports stay inside so parsing loads none of them.
def _memory_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.memory_qdrant import LocalQdrantMemory

    return LocalQdrantMemory(conn_id, local_path(conn_id, conn))


def _notes_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.notes_folder import MarkdownNotes

    return MarkdownNotes(conn_id, local_path(conn_id, conn))


def _web_http(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.web import HttpWebPages

    extra = conn.extra_dejson
    return HttpWebPages(
        conn_id,
        allow_private_network=flag(conn, "allow_private_network"),
        timeout=float(extra.get("timeout", 10.0)),
    )


def _writer_generic(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.copywriter import TemplateCopywriter

    return TemplateCopywriter()


def _design_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.assets import open_assets
    from include.orchestrator.backends.local.images import PillowDesign

    return PillowDesign(conn_id, open_assets())


def _design_figma(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.assets import open_assets
    from include.orchestrator.backends.cloud.figma import FigmaDesign

    return FigmaDesign(conn_id, conn, open_assets())


def _review_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.git_repo import GitReview

    return GitReview(conn_id, local_path(conn_id, conn))


def _notify_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.outbox import OutboxNotifier

    return OutboxNotifier(conn_id, local_path(conn_id, conn))


def _email_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.outbox import OutboxEmail

    return OutboxEmail(conn_id, local_path(conn_id, conn))


def _email_smtp(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.cloud.smtp_email import SmtpEmail

    return SmtpEmail(conn_id)


def _social_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.outbox import LocalSocialQueue

    return LocalSocialQueue(conn_id, local_path(conn_id, conn))


def _blog_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.git_repo import GitBlog

    return GitBlog(conn_id, local_path(conn_id, conn), branch=conn.extra_dejson.get("branch", "main"))


def _analytics_fs(conn_id: str, conn: Any) -> Any:
    from include.orchestrator.backends.local.dashboards import GrafanaFolder

    return GrafanaFolder(conn_id, local_path(conn_id, conn))


def _service(module: str, name: str) -> Factory:
    """A production backend: ``backends.<module>.<name>(conn_id, conn)``, imported when first used."""

    def build(conn_id: str, conn: Any) -> Any:
        from importlib import import_module

        return getattr(import_module(f"include.orchestrator.backends.{module}"), name)(conn_id, conn)

    return build


Factory = Callable[[str, Any], Any]
BACKENDS: dict[str, dict[str, tuple[Factory, str]]] = {
    "memory": {
        "fs": (_memory_fs, "Qdrant local mode on disk at extra.path"),
        "qdrant": (_service("local.memory_qdrant", "ServerQdrantMemory"), "a Qdrant server (the Qdrant provider's hook)"),
    },
    "notes": {
        "fs": (_notes_fs, "a folder of markdown research notes at extra.path"),
        "http": (_service("cloud.notion", "NotionNotes"), "a Notion data source (host https://api.notion.com)"),
    },
    "web": {"http": (_web_http, "direct HTTP fetch; extra.allow_private_network for loopback/private hosts")},
    "writer": {
        "generic": (_writer_generic, "the offline template copywriter (no LLM)"),
        "http": (_service("cloud.llm", "ChatCompletionsWriter"), "any OpenAI-compatible v1/chat/completions API"),
    },
    "design": {
        "fs": (_design_fs, "PNG images drawn with Pillow, stored in the campaign_assets object store"),
        "http": (_design_figma, "Figma image export of named components (host https://api.figma.com), stored in campaign_assets"),
    },
    "review": {
        "fs": (_review_fs, "review branches in the local git repository at extra.path"),
        "github": (_service("cloud.github", "GithubReview"), "a pull request on GitHub (or GitHub Enterprise)"),
    },
    "notify": {
        "fs": (_notify_fs, "notification files in the outbox folder at extra.path"),
        "slack": (_service("cloud.slack", "SlackNotifier"), "a Slack channel through the Slack Web API"),
    },
    "email": {
        "smtp": (_email_smtp, "delivery through the SMTP server of the connection"),
        "fs": (_email_fs, ".eml files in the outbox folder at extra.path"),
        "http": (_service("cloud.sendgrid", "SendGridEmail"), "a SendGrid Single Send (host https://api.sendgrid.com)"),
    },
    "social": {
        "fs": (_social_fs, "a local queue file in extra.path"),
        "http": (_service("cloud.buffer", "BufferSocial"), "posts through Buffer's GraphQL API (host https://api.buffer.com)"),
    },
    "blog": {
        "fs": (_blog_fs, "commits pushed to the bare git repository at extra.path"),
        "github": (_service("cloud.github", "GithubBlog"), "a file committed to a GitHub repository"),
    },
    "analytics": {
        "fs": (_analytics_fs, "Grafana dashboard JSON models written to extra.path"),
        "http": (_service("cloud.grafana", "GrafanaApi"), "dashboards created through Grafana's HTTP API"),
    },
}


def conn_id_for(port: Port, overrides: Mapping[Port, str] | None = None) -> str:
    return (overrides or {}).get(port, DEFAULT_CONN_IDS[port])


def backend_for(port: str, conn_id: str, conn: Any) -> Any:
    """Build the backend a connection asks for; raises ConnectionConfigError otherwise."""
    choices = BACKENDS[port]
    kind = (conn.conn_type or "").lower()
    if kind not in choices:
        supported = "; ".join(f"{t} ({desc})" for t, (_, desc) in choices.items())
        raise ConnectionConfigError(
            f"connection {conn_id!r} has type {kind or '(none)'!r}, which the {port} port cannot use. Supported: {supported}"
        )
    return choices[kind][0](conn_id, conn)


def open_backend(port: str, conn_id: str) -> Any:
    """The backend of ``port`` behind connection ``conn_id`` (compensation opens the one an effect names).
    A production backend (one with a ``service``) comes wrapped in its service's circuit breaker."""
    backend = backend_for(port, conn_id, get_connection(conn_id))
    if getattr(backend, "service", None):
        from include.orchestrator.resilience.breakers import Guarded, open_breakers

        return Guarded(backend, open_breakers())
    return backend


def open_port(port: Port, overrides: Mapping[Port, str] | None = None) -> Any:
    return open_backend(port, conn_id_for(port, overrides))
