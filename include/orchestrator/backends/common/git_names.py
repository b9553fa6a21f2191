"""Names a campaign may give a git branch or a file in a repository, checked before git or GitHub
sees them: the local git backends and the GitHub ones share them.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,150}$")  # campaign slugs and run keys


_BRANCH = re.compile(r"^[a-z0-9][a-z0-9-]{0,100}(/[a-z0-9][a-z0-9-]{0,150})?$")  # main, review/<key>


_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,150}$")  # one path component


def safe_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} is not allowed: lowercase letters, digits and '-' only")
    return value


def safe_branch(value: str) -> str:
    if not _BRANCH.match(value):
        raise ValueError(f"branch {value!r} is not allowed: lowercase letters, digits, '-' and one '/'")
    return value


def safe_path(value: str) -> str:
    """A relative path inside a repository: plain components, no '..', no '.git', no spaces."""
    parts = value.split("/")
    if len(value) > 300 or not all(_PART.match(p) and ".." not in p and p.lower() != ".git" for p in parts):
        raise ValueError(f"path {value!r} is not allowed: relative, components of letters, digits, '_', '-', '.', no '..'")
    return value
