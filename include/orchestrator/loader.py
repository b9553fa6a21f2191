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

from include.orchestrator import model
from include.orchestrator.model import Campaign

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


# What a pattern means, in words: the model's patterns, each named once.
_PATTERNS = {
    model.EMAIL_PATTERN: "not a valid email address",
    model.SLUG_PATTERN: "must be 1 to 64 lowercase letters, digits or dashes (like spring-launch)",
    model.COLOUR_PATTERN: 'not a colour: write it as "#" and six hex digits, e.g. "#1f2937"',
    model.GITHUB_LOGIN_PATTERN: "not a GitHub login (letters, digits and single dashes, at most 39 characters)",
    model.TAG_PATTERN: "a tag is 1 to 40 letters, digits or _ . : -",
    model.CONN_ID_PATTERN: "not an Airflow connection id (letters, digits, _ . -)",
    model.LAUNCH_PATTERN: "a launch name is at most 64 letters, digits or _ . : -",
}
_DURATION_WORDS = 'not a duration: write e.g. "24h", "90m", "2d", "30s" or a number of seconds'
_URL_WORDS = "not a web address: write it in full, e.g. https://example.com/page"


def _plain(item: dict) -> str:
    """One pydantic error in plain words (pydantic's own message when there is no better one)."""
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind == "missing":
        return "missing: this field is required"
    if kind == "extra_forbidden":
        return "unknown key: check its spelling and place"
    if kind == "string_pattern_mismatch":
        return _PATTERNS.get(ctx.get("pattern"), f"does not have the expected form (pattern {ctx.get('pattern')})")
    if kind == "url_scheme":
        return "must be a web address starting with http:// or https://"
    if kind.startswith("url_"):
        return _URL_WORDS
    if kind.startswith("time_delta_"):
        return _DURATION_WORDS
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        count = ctx.get("min_length")
        return f"needs at least {count} item{'' if count == 1 else 's'}"
    if kind == "too_long":
        return f"may have at most {ctx.get('max_length')} items"
    words = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le"),
             "greater_than": ("more than", "gt"), "less_than": ("less than", "lt")}
    if kind in words:
        return f"must be {words[kind][0]} {ctx.get(words[kind][1])}"
    fixed = {"int_parsing": "must be a whole number", "int_type": "must be a whole number",
             "int_from_float": "must be a whole number", "bool_parsing": "must be true or false",
             "bool_type": "must be true or false", "string_type": "must be text",
             "list_type": "must be a list (one item per line, each starting with - )",
             "model_type": "must be a mapping of fields (key: value lines)", "dict_type": "must be a mapping (key: value lines)",
             "model_attributes_type": "must be a mapping of fields (key: value lines)"}
    if kind in fixed:
        return fixed[kind]
    message = item["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):  # our own validators' messages are already words
        message = message.removeprefix(prefix)
    return message


def _describe(error: ValidationError) -> tuple[str, ...]:
    problems = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        key = loc[-1:] == ["[key]"]  # a mapping's key is wrong, not its value
        field = ".".join(loc[:-1] if key else loc) or "(top level)"
        got = "" if item["type"] in ("missing", "extra_forbidden") else f" (got {item['input']!r:.80})"
        problems.append(f"{field}: {'the key ' if key else ''}{_plain(item)}{got}")
    return tuple(problems)


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
        raise CampaignFilesInvalid([CampaignFileError(path, _describe(exc))]) from None
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
