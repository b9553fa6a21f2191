"""The GitHub review and blog backends against the GitHub double (tests/doubles/github.py), a
review bundle and a blog post."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from airflow.sdk import Connection

from include.orchestrator.backends.cloud.github import GithubBlog, GithubReview
from include.orchestrator.domain.ports import BlogPost, Image, ReviewBundle
from tests.doubles.github import GithubDouble

BRANCH = "campaign-review/spring-launch-3f2a9c1b0d4e"
POST = BlogPost(
    key="spring-launch-3f2a9c1b0d4e-blog",
    path="_posts/2026-03-02-spring-launch.md",
    title="Spring launch",
    markdown="---\ntitle: Spring launch\n---\n\nPipewise 3 is here.\n",
)


def github_conn(url: str, password: str = "test-token", conn_id: str = "campaign_review", **extra: Any) -> Connection:
    return Connection(
        conn_id=conn_id,
        conn_type="github",
        host=url,
        password=password,
        extra=json.dumps({"repository": "acme/campaigns", **extra}),
    )


def png(tmp_path: Path, channel: str, fill: bytes = b"x") -> Image:
    data = b"\x89PNG\r\n\x1a\n" + fill * 64 + channel.encode()  # as read from the asset store
    return Image(
        channel=channel,
        url=f"s3://assets/images/{channel}.png",
        width=1200,
        height=630,
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
    )


def bundle(tmp_path: Path, markdown: str = "# Spring launch\n\nEmail: Ship faster.\n") -> ReviewBundle:
    return ReviewBundle(
        key="spring-launch-3f2a9c1b0d4e",
        campaign_slug="spring-launch",
        title="Review: Spring Launch 2027",
        markdown=markdown,
        images=[png(tmp_path, "email"), png(tmp_path, "social")],
    )


def review(double: GithubDouble, **extra: Any) -> GithubReview:
    return GithubReview("campaign_review", github_conn(double.url, **extra))


def blog(double: GithubDouble, **extra: Any) -> GithubBlog:
    return GithubBlog("campaign_blog", github_conn(double.url, conn_id="campaign_blog", **extra))


def writes(double: GithubDouble) -> list[tuple[str, str]]:
    """The requests that change something (every method but GET), in order."""
    return [(m, p) for m, p in double.calls if m != "GET"]
