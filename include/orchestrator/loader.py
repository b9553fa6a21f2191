"""Read campaign files: one YAML file per campaign, validated by the model.

A bad file never hides the good ones: :func:`load_campaigns` returns the valid campaigns and a
list of :class:`CampaignFileError`, each naming the file, the field and what is wrong, in words
a newcomer can act on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from include.orchestrator.model import Campaign, describe

CAMPAIGNS_DIR = Path(__file__).resolve().parent.parent / "campaigns"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~8x faster


@dataclass(frozen=True)
class CampaignFileError:
    path: Path
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path}:\n" + "\n".join(f"  - {p}" for p in self.problems)


class CampaignFilesInvalid(Exception):
    """Raised by the error-reporting DAG file so Airflow shows every bad campaign file.

    The text starts with the first file, its fields and their problems; how many files are
    invalid comes last.
    """

    def __init__(self, errors: list[CampaignFileError]):
        self.errors = errors
        count = len(errors)
        tail = ("1 campaign file is invalid: its DAG is not loaded" if count == 1 else
                f"{count} campaign files are invalid: their DAGs are not loaded")
        super().__init__("\n".join(str(e) for e in errors) + f"\n({tail}; the other campaigns are.)")


def campaigns_dir() -> Path:
    return Path(os.environ.get("CAMPAIGNS_DIR", CAMPAIGNS_DIR))


def campaign_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and not p.name.startswith((".", "_")))


def parse_campaign(path: Path) -> Campaign:
    """Parse and validate one file; raises ``CampaignFilesInvalid`` with one error."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise CampaignFilesInvalid([CampaignFileError(path, (f"YAML syntax error: {where}{getattr(exc, 'problem', exc)}",))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignFilesInvalid([CampaignFileError(path, (f"cannot read the file: {exc}",))]) from None
    if not isinstance(data, dict):
        raise CampaignFilesInvalid([CampaignFileError(path, ("the file must be a YAML mapping of campaign fields",))])
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        raise CampaignFilesInvalid([CampaignFileError(path, describe(exc))]) from None
    if path.stem != campaign.slug:
        # One file per campaign, named by its slug: a DAG id leads straight to its file.
        raise CampaignFilesInvalid(
            [CampaignFileError(path, (f"slug: {campaign.slug!r} must match the file name: rename the file to {campaign.slug}{path.suffix} or change the slug",))]
        )
    return campaign


def load_campaigns(folder: Path | None = None, slug: str | None = None) -> tuple[list[Campaign], list[CampaignFileError]]:
    """All valid campaigns of a folder (or only the one with ``slug``), and one error per invalid file."""
    by_slug: dict[str, list[tuple[Path, Campaign]]] = {}
    errors: list[CampaignFileError] = []
    paths = campaign_files(folder or campaigns_dir())
    if slug is not None:
        paths = [p for p in paths if p.stem == slug]
    for path in paths:
        try:
            campaign = parse_campaign(path)
        except CampaignFilesInvalid as exc:
            errors.extend(exc.errors)
        else:
            by_slug.setdefault(campaign.slug, []).append((path, campaign))
    campaigns = []
    for slug, found in by_slug.items():
        if len(found) == 1:
            campaigns.append(found[0][1])
            continue
        # Neither copy wins: a DAG whose definition depends on file order is worse than none.
        names = ", ".join(p.name for p, _ in found)
        errors.extend(
            CampaignFileError(p, (f"slug: {slug!r} is also used by {names}; each campaign needs its own slug",))
            for p, _ in found
        )
    return campaigns, errors


def campaign_of(dag_id: str) -> Campaign | None:
    """The valid campaign behind a campaign DAG id (``campaign_<slug>``), or None."""
    if not dag_id.startswith("campaign_"):
        return None
    found, _ = load_campaigns(slug=dag_id.removeprefix("campaign_"))
    return found[0] if found else None
