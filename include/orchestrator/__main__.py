"""Command line: `python -m include.orchestrator demo|up|seed-memory|schema|approve|reject|validate`."""

from __future__ import annotations

import argparse
import json
import sys

from include.orchestrator.loader import CAMPAIGNS_DIR, load_campaigns
from include.orchestrator.model import Campaign

SCHEMA_PATH = CAMPAIGNS_DIR / "campaign.schema.json"


def schema_text() -> str:
    return json.dumps(Campaign.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.orchestrator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the sample campaign end to end on the embedded backends")
    sub.add_parser("up", help="start Airflow (UI on :8080) with the local backends")
    sub.add_parser("seed-memory", help="remember the brand voices and research of include/memory_seed")
    sub.add_parser("schema", help=f"write the campaign JSON schema to {SCHEMA_PATH.name}")
    sub.add_parser("validate", help="check every campaign file and name what is wrong")
    for verb in ("approve", "reject"):
        cmd = sub.add_parser(verb, help=f"{verb} a run waiting at the approval gate")
        cmd.add_argument("campaign", help="campaign slug or dag id")
        cmd.add_argument("run_id")
        cmd.add_argument("--by", required=True, help="your Airflow user name")
        cmd.add_argument("--reason", default="")
    args = parser.parse_args(argv)

    if args.command == "schema":
        SCHEMA_PATH.write_text(schema_text())
        print(f"wrote {SCHEMA_PATH}")
        return 0
    if args.command == "validate":
        campaigns, errors = load_campaigns()
        for campaign in campaigns:
            print(f"ok    {campaign.dag_id}")
        for error in errors:
            print(f"error {error}")
        return 1 if errors else 0

    from include.orchestrator import localdev

    if args.command == "demo":
        return localdev.demo()
    if args.command == "up":
        return localdev.up()
    if args.command == "seed-memory":
        print(f"{localdev.seed_memory(localdev.settings_connections())} entries remembered")
        return 0
    dag_id = args.campaign if args.campaign.startswith("campaign_") else f"campaign_{args.campaign}"
    decision = "approved" if args.command == "approve" else "rejected"
    print(localdev.record_decision(dag_id, args.run_id, decision, args.by, args.reason))
    return 0


if __name__ == "__main__":
    sys.exit(main())
