"""Sample values of the port records (``domain/ports.py``): a draft's copy and images, an email.

Each builder takes the fields a test changes; the rest are the values the tests share.
"""

from __future__ import annotations

from typing import Any

from include.orchestrator.domain.ports import Copy, Email, Image


def draft(**changes: Any) -> Copy:
    """A writer's copy, as the gate shows it for review."""
    fields: dict[str, Any] = {
        "headline": "Pipewise 3",
        "email_subject": "Meet Pipewise 3",
        "email_body": "Body",
        "social_posts": ["Post one"],
        "blog_title": "Title",
        "blog_body": "Blog",
        "writer": "template",
    }
    return Copy(**{**fields, **changes})


DRAFT = draft()
IMAGES = [Image(channel=c, url=f"file:///assets/{c}.png", width=10, height=10, sha256=c * 8) for c in ("email", "social", "blog")]


def email(**changes: Any) -> Email:
    """One batch of the spring launch's email."""
    fields: dict[str, Any] = {
        "key": "spring-launch-3f2a9c1b0d4e-email-0001",
        "sender": "news@pipewise.example",
        "to": ["ana@example.com", "bo@example.com"],
        "subject": "Spring launch: ship faster",
        "text": "Hello,\n\nIt is here.",
        "unsubscribe": "https://pipewise.example/unsubscribe",
    }
    return Email(**{**fields, **changes})
