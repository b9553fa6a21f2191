"""Read campaign files: one YAML file per campaign, validated by the model.

A bad file never hides the good ones: :func:`load_campaigns` returns the valid campaigns and a
list of :class:`CampaignFileError`, each naming the file, the field and what is wrong, in words
a newcomer can act on.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from include.orchestrator.domain import model
from include.orchestrator.domain.model import Campaign
from include.orchestrator.errors import CampaignFieldError, CampaignFileError, CampaignFilesInvalid, CredentialsInUrl

CAMPAIGNS_DIR = Path(__file__).resolve().parents[2] / "campaigns"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~8x faster

# What one campaign file may cost to read. A campaign is a few KB (1,000 recipients: ~40 KB) and at
# most 5 levels deep; YAML aliases can make a 1 KB file expand to billions of values (a "billion
# laughs"), which the model, and the repr of an error, would then walk in full.
MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 20
MAX_ALIASES = 20
MAX_VALUES = 50_000  # scalars and collections, aliases counted as what they expand to
MAX_PROBLEMS = 20  # listed per file; the rest are counted


def campaigns_dir() -> Path:
    return Path(os.environ.get("CAMPAIGNS_DIR", CAMPAIGNS_DIR))


def campaign_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and not p.name.startswith((".", "_")))


# Bounded: a value's repr in full could be as large as the file (or, aliased, far larger).
_REPR = reprlib.Repr()  # Python 3.11: limits are attributes, not arguments
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 40


def preview(value: object, limit: int = 80) -> str:
    """A short repr of a value, built without walking all of it."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _capped(problems: list[str]) -> tuple[str, ...]:
    if len(problems) <= MAX_PROBLEMS:
        return tuple(problems)
    return (*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more problems")


def _describe(error: ValidationError) -> tuple[str, ...]:
    problems = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        key = loc[-1:] == ["[key]"]  # a mapping's key is wrong, not its value
        field = ".".join(loc[:-1] if key else loc) or "(top level)"
        secret = isinstance((item.get("ctx") or {}).get("error"), CredentialsInUrl)  # never repeat a password
        got = "" if item["type"] in ("missing", "extra_forbidden") or secret else f" (got {preview(item['input'])})"
        problems.append(f"{field}: {'the key ' if key else ''}{model.plain_words(item)}{got}")
    return _capped(problems)


@dataclass
class _Open:
    """A mapping or sequence being read by :func:`_structure_problems`."""

    path: str
    mapping: bool
    start: int  # values read before it began
    anchor: str | None
    keys: dict[str, int] = field(default_factory=dict)  # key -> line, mappings only
    key: str | None = None  # mappings: the key whose value comes next (None: a key comes next)
    index: int = 0  # sequences: the next item's index


def _structure_problems(text: str) -> list[str]:  # noqa: C901 -- one pass over the parser events, sharing its counters and stack
    """What makes a YAML text costly or ambiguous, found from its parser events before any value is built:
    nesting deeper than MAX_DEPTH, more than MAX_ALIASES aliases, more than MAX_VALUES values once aliases
    are expanded (each stops the reading at once), and keys given twice in one mapping (which YAML
    loaders resolve silently, the last one winning)."""
    problems: list[str] = []
    stack: list[_Open] = []
    expanded: dict[str, int] = {}  # anchor -> how many values its node holds
    values = aliases = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            if done.anchor:
                expanded[done.anchor] = values - done.start
            continue
        if not isinstance(event, yaml.ScalarEvent | yaml.AliasEvent | yaml.CollectionStartEvent):
            continue  # stream and document events
        line = event.start_mark.line + 1
        where = "(top level)"
        if stack:
            parent = stack[-1]
            if parent.mapping and parent.key is None:  # this node is a key
                key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
                where = f"{parent.path}.{key}" if parent.path else key
                if key in parent.keys:
                    problems.append(
                        f"{where}: given twice in one mapping (lines {parent.keys[key]} and {line}); "
                        "YAML would silently keep only the last: merge them into one"
                    )
                parent.keys[key] = line
                parent.key = key
            else:
                step = parent.key if parent.mapping else str(parent.index)
                where = f"{parent.path}.{step}" if parent.path else str(step)
                parent.key, parent.index = None, parent.index + 1
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            values += expanded.get(event.anchor, 1)
            if aliases > MAX_ALIASES:
                return [f"{where}: more than {MAX_ALIASES} aliases (*name) in one file (line {line}): write the values out"]
        else:
            values += 1
        if values > MAX_VALUES:
            return [
                f"{where}: more than {MAX_VALUES:,} values once the aliases (*name) are expanded (line {line}): "
                "a campaign file is far smaller"
            ]
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append(_Open(where if stack else "", isinstance(event, yaml.MappingStartEvent), values - 1, event.anchor))
            if len(stack) > MAX_DEPTH:
                return [f"{where}: nested more than {MAX_DEPTH} levels deep (line {line}): a campaign needs 5 at most"]
        elif isinstance(event, yaml.ScalarEvent) and event.anchor:
            expanded[event.anchor] = 1
    return problems


def _read(path: Path) -> str:
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)  # never more, whatever the file is
    if len(data) > MAX_FILE_BYTES:
        raise CampaignFilesInvalid(
            [CampaignFileError(path, (f"the file is larger than {MAX_FILE_BYTES // 1024} KB: a campaign file is a few KB",))]
        )
    return data.decode("utf-8")


def parse_campaign(path: Path) -> Campaign:
    """Parse and validate one file; raises ``CampaignFilesInvalid`` with one error."""
    try:
        text = _read(path)
        if problems := _structure_problems(text):
            raise CampaignFilesInvalid([CampaignFileError(path, _capped(problems))])
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = f"YAML syntax error: {where}{getattr(exc, 'problem', exc)}"
        raise CampaignFilesInvalid([CampaignFileError(path, (problem,))]) from None
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
        problem = (
            f"slug: {campaign.slug!r} must match the file name: rename the file to {campaign.slug}{path.suffix} "
            "or change the slug"
        )
        raise CampaignFilesInvalid([CampaignFileError(path, (problem,))])
    return campaign


def _failure(exc: Exception, doing: str) -> tuple[str, ...]:
    """A file's error for whatever was raised while ``doing`` something with it: never the whole folder's."""
    if isinstance(exc, ValidationError):  # e.g. from a model the build step validates
        return _describe(exc)
    if isinstance(exc, CampaignFieldError):
        return (str(exc),)
    text = str(exc)
    return (f"{doing}: {type(exc).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}",)


def load_campaigns(  # noqa: C901 -- one folder's load: every file's parse and build errors gathered in one list
    folder: Path | None = None, slug: str | None = None, build: Callable[[Campaign], object] | None = None
) -> tuple[list[Campaign], list[CampaignFileError]]:
    """All valid campaigns of a folder (or only the one with ``slug``), and one error per invalid file.

    ``build`` runs on each valid campaign inside its file's error handling (the DAG builder passes
    its build): whatever it raises is that file's error and leaves the campaign out.
    """
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
        except Exception as exc:  # a crash of one file is its error, never every campaign's
            errors.append(CampaignFileError(path, _failure(exc, "cannot be read as a campaign")))
        else:
            by_slug.setdefault(campaign.slug, []).append((path, campaign))
    campaigns = []
    for slug, found in by_slug.items():
        if len(found) > 1:
            # Neither copy wins: a DAG whose definition depends on file order is worse than none.
            names = ", ".join(p.name for p, _ in found)
            errors.extend(
                CampaignFileError(p, (f"slug: {slug!r} is also used by {names}; each campaign needs its own slug",))
                for p, _ in found
            )
            continue
        [(path, campaign)] = found
        try:
            if build is not None:
                build(campaign)
        except Exception as exc:
            errors.append(CampaignFileError(path, _failure(exc, "Airflow cannot build its DAG")))
        else:
            campaigns.append(campaign)
    return campaigns, errors


def campaign_of(dag_id: str) -> Campaign | None:
    """The valid campaign behind a campaign DAG id (``campaign_<slug>``), or None."""
    if not dag_id.startswith("campaign_"):
        return None
    found, _ = load_campaigns(slug=dag_id.removeprefix("campaign_"))
    return found[0] if found else None
