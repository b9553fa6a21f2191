"""Command line: `python -m include.orchestrator demo|up|seed-memory|schema|approve|reject|validate`."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from include.orchestrator.domain.loader import CAMPAIGNS_DIR
from include.orchestrator.domain.model import Campaign
from include.orchestrator.errors import DecisionRefused

SCHEMA_PATH = CAMPAIGNS_DIR / "campaign.schema.json"


def schema_text() -> str:
    return json.dumps(Campaign.model_json_schema(), indent=2, sort_keys=True) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m include.orchestrator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the sample campaign end to end on the embedded backends")
    sub.add_parser("up", help="start Airflow (UI on :8080) with the local backends")
    sub.add_parser("seed-memory", help="remember the brand voices and research of include/memory_seed")
    sub.add_parser("schema", help=f"write the campaign JSON schema to {SCHEMA_PATH.name}")
    sub.add_parser("validate", help="check every campaign file and name what is wrong")
    for verb in ("approve", "reject", "approval-status"):
        cmd = sub.add_parser(verb, help=f"{verb.replace('-', ' ')} of a run at the approval gate, through the Airflow API")
        cmd.add_argument("campaign", help="campaign slug or dag id")
        cmd.add_argument("run_id")
        cmd.add_argument("--user", default=os.environ.get("AIRFLOW_USER", "admin"), help="Airflow user (env AIRFLOW_USER)")
        api_url = os.environ.get("AIRFLOW_API_URL", "http://localhost:8080")
        cmd.add_argument("--api-url", default=api_url, help="env AIRFLOW_API_URL")
        if verb != "approval-status":
            cmd.add_argument("--reason", default="", help="why (required to reject)")
        if verb == "approve":
            cmd.add_argument("--copy", type=argparse.FileType(), help="JSON file of edited copy (headline, email_body, ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    if args.command == "schema":
        SCHEMA_PATH.write_text(schema_text())
        print(f"wrote {SCHEMA_PATH}")
        return 0
    if args.command == "validate":
        # What the DAG processor will refuse too (it imports Airflow: a few seconds): the same check as the UI's.
        from include.orchestrator.airflow.dags import load_dags

        campaigns, errors = load_dags()
        for campaign in campaigns:
            print(f"ok    {campaign.dag_id}")
        for error in errors:
            print(f"error {error}")
        return 1 if errors else 0

    from include.orchestrator.dev import localdev

    if args.command == "demo":
        return localdev.demo()
    if args.command == "up":
        return localdev.up()
    if args.command == "seed-memory":
        print(f"{localdev.seed_memory(localdev.settings_connections())} entries remembered")
        return 0
    return decide(args)


def ask_password(user: str) -> str:
    """The password typed in the terminal; "" when there is no terminal to ask in (or nothing was typed)."""
    if not sys.stdin.isatty():  # getpass would read a line of stdin, or fail with EOFError
        return ""
    try:
        return getpass.getpass(f"Airflow password for {user}: ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return ""


def decide(args: argparse.Namespace) -> int:
    """approve / reject / approval-status: the campaign decision API, as an Airflow user."""
    from urllib.parse import quote

    import httpx

    from include.orchestrator.approval.rules import call_api

    dag_id = args.campaign if args.campaign.startswith("campaign_") else f"campaign_{args.campaign}"
    path = f"/campaigns/api/v1/approvals/{quote(dag_id, safe='')}/{quote(args.run_id, safe='')}"
    password = os.environ.get("AIRFLOW_PASSWORD") or ask_password(args.user)
    if not password:
        print(
            f"error: no password for Airflow user {args.user!r}: set AIRFLOW_PASSWORD, or run in a terminal to be asked for it",
            file=sys.stderr,
        )
        return 2
    body = None
    if args.command != "approval-status":
        body = {"decision": args.command, "reason": args.reason, "via": "cli"}
        if getattr(args, "copy", None):
            try:
                body["copy"] = json.load(args.copy)
            except ValueError as exc:
                print(f"error: {args.copy.name} is not JSON: {exc}", file=sys.stderr)
                return 2
    try:
        answer = call_api(args.api_url, args.user, password, "GET" if body is None else "POST", path, body)
    except DecisionRefused as exc:
        print(f"error ({exc.status}): {exc}", file=sys.stderr)
        return 1
    except (httpx.TransportError, TimeoutError) as exc:  # TimeoutError: errors.DeadlineExceeded
        print(f"error: cannot reach the Airflow API at {args.api_url}: {exc}", file=sys.stderr)
        return 1
    if body is None:
        print(json.dumps(answer, indent=2))
    else:
        from include.orchestrator.approval.rules import Decision

        print(Decision.model_validate(answer).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
