"""Blog posts with their hero image, and untrusted text made inert (blog_format.py, GitBlog, GithubBlog).

The hero is a real Pillow render read back from the asset store; the git backend runs real git on a
bare remote; GitHub is the REST double (every request checked against GitHub's docs); the Markdown is
rendered through python-liquid and markdown-it-py, and through Jekyll itself when it is installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import date
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk import Connection
from hypothesis import given, settings
from hypothesis import strategies as st
from liquid import DictLoader, Environment
from markdown_it import MarkdownIt
from PIL import Image as PILImage

from include.orchestrator import steps
from include.orchestrator.backends.assets import AssetStore
from include.orchestrator.backends.cloud.github import GithubBlog
from include.orchestrator.backends.local.git_repo import Git, GitBlog
from include.orchestrator.backends.local.images import PillowDesign
from include.orchestrator.domain.blog_format import blog_markdown, blog_post, body_text, hero_path, inline_text, single_line
from include.orchestrator.domain.loader import load_campaigns
from include.orchestrator.domain.model import Campaign, plan_run
from include.orchestrator.domain.ports import Copy, Image, ImageSpec
from include.orchestrator.errors import ServiceError
from tests.doubles.github import GithubDouble, git_blob_sha

DAY = date(2026, 3, 2)
POST_PATH, HERO_PATH = "_posts/2026-03-02-spring-launch.md", "assets/images/2026-03-02-spring-launch-hero.png"
KEY = "spring-launch-3f2a9c1b0d4e-blog"
BODY = "Pipewise 3 puts every pipeline on one page.\n\n## Why it matters\n\nFewer pages at 3 am.\n"
HOSTILE_TITLE = "Launch\r\n# Heading\u2028## Other\x00 \U0001f680 <b>bold</b> {{ site.title }}"
HOSTILE_BODY = """Intro with <script>alert(1)</script> and <img src=x onerror=alert(2)> & more.

## Why it matters

{% include /etc/passwd %} and {{ site.data.secret.value }} and {% endraw %}{{ x }} and {%- endraw -%}{{ site.data.secret.value }}.

[x](javascript:alert(1)) and ![pixel](https://tracker.example/p.png) and [docs](https://example.com/docs?a=1&b=2).

{: onclick="alert(3)"}
{::nomarkdown}<b>raw</b>{:/nomarkdown}

\\[escaped](javascript:alert(4)) and \\\\[double](javascript:alert(5)) and <javascript:alert(7)>

[ref]: javascript:alert(6)
<!-- a comment --> $$ x^2 $$
"""


# --- fixtures ------------------------------------------------------------------------------------
def campaign(**blog: str) -> Campaign:
    [found], _ = load_campaigns(slug="spring-launch")
    channels = found.channels.model_copy(update={"blog": found.channels.blog.model_copy(update=blog)})
    return found.model_copy(update={"channels": channels})


def copy(title: str = "Pipewise 3 is here", body: str = BODY, headline: str = "Every pipeline on one page") -> Copy:
    # Built past validation: Copy refuses the hostile title's line breaks and NUL (test_control_characters),
    # and publishing must still make such a title inert on its own.
    return Copy.model_construct(
        headline=headline, email_subject="s", email_body="b", social_posts=["p"], blog_title=title, blog_body=body, writer="test"
    )


def hero(folder: Path, headline: str = "Every pipeline on one page") -> tuple[Image, AssetStore]:
    """The blog channel's image as the design phase renders it (1600x900, Pillow), read back with its bytes."""
    store = AssetStore("campaign_assets", folder.resolve().as_uri())
    image, _ = PillowDesign("campaign_design", store).render(
        ImageSpec(
            key="spring-launch-3f2a9c1b0d4e-image-blog",
            channel="blog",
            width=1600,
            height=900,
            headline=headline,
            subline="Start a free trial",
            background="#0f172a",
            foreground="#f8fafc",
        )
    )
    return store.read_image(image), store


def decoded(data: bytes, image: Image) -> None:
    """``data`` is the hero: a 1600x900 PNG, byte for byte the rendered image."""
    assert hashlib.sha256(data).hexdigest() == image.sha256
    with PILImage.open(io.BytesIO(data)) as png:
        png.load()
        assert (png.format, png.size) == ("PNG", (1600, 900))


def front_and_body(markdown: str) -> tuple[dict[str, Any], str]:
    assert markdown.startswith("---\n")
    front, body = markdown[4:].split("\n---\n", 1)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml, as Jekyll's Psych
    return yaml.load(front, Loader=loader), body


def markup(html: str) -> set[str]:
    """The element names in ``html``; fails on any event-handler attribute (onclick, onerror...)."""
    tags = re.findall(r"<(/?)([A-Za-z!][^\s>/]*)([^>]*)>", html)
    assert not [t for t in tags if re.search(r"\bon[a-z]+\s*=", t[2], re.I)], tags
    return {name.lower() for _, name, _ in tags}


def git(*args: str) -> bytes:
    return subprocess.run(["git", *args], capture_output=True, check=True).stdout


def subjects(remote: Path) -> list[str]:
    return git("--git-dir", str(remote), "log", "--format=%s", "main").decode().splitlines()


# --- the post's text -----------------------------------------------------------------------------
def test_front_matter_references_the_hero_and_is_yaml_with_single_line_values(tmp_path: Path) -> None:
    image, _ = hero(tmp_path)
    markdown = blog_markdown(
        campaign(author="Dana\n# Reyes <i>", category="launches\r\nlayout: evil"), copy(title=HOSTILE_TITLE), DAY, image
    )
    front, body = front_and_body(markdown)
    assert front == {
        "layout": "post",
        "title": "Launch # Heading ## Other \U0001f680 <b>bold</b> {{ site.title }}",
        "date": "2026-03-02",
        "author": "Dana # Reyes <i>",
        "categories": ["launches layout: evil"],
        "campaign": "spring-launch",
        "image": {"path": "/" + HERO_PATH, "width": 1600, "height": 900, "alt": "Every pipeline on one page. Start a free trial"},
    }
    assert "\U0001f680" in markdown and "\\ud83d" not in markdown  # UTF-8, not JSON's surrogate escapes (libyaml refuses them)
    first, rest = body.split("\n", 1)
    assert first == f'![Every pipeline on one page. Start a free trial]({{{{ "/{HERO_PATH}" | relative_url }}}})'
    assert rest == "\n" + body_text(BODY) + "\n" and "\n## Why it matters\n" in rest
    assert blog_markdown(campaign(), copy(), DAY).count("relative_url") == 0  # no hero, no image line


def test_hostile_copy_renders_inert_through_liquid_and_markdown(tmp_path: Path) -> None:
    image, _ = hero(tmp_path)
    _, body = front_and_body(
        blog_markdown(
            campaign(),
            copy(title=HOSTILE_TITLE, body=HOSTILE_BODY, headline="Hero {{ site.data.secret.value }} ] (x)"),
            DAY,
            image,
        )
    )
    # Liquid as Jekyll runs it first: our relative_url runs, nothing from the copy does.
    env = Environment(loader=DictLoader({"/etc/passwd": "ROOT-SECRET"}))
    env.filters["relative_url"] = lambda path: "/blog" + str(path)
    liquid = env.from_string(body).render(site={"data": {"secret": {"value": "DATA-SECRET"}}, "title": "T"}, x="X-SECRET")
    assert "SECRET" not in liquid
    assert liquid.split("\n", 1)[1] == body.split("\n", 1)[1]  # the copy's text passes Liquid unchanged
    html = MarkdownIt("commonmark").render(liquid)  # raw HTML allowed, as kramdown allows it
    assert "<h2>Why it matters</h2>" in html and html.count("<h2>") == 1 and "<h1>" not in html
    assert re.findall(r"<img [^>]*>", html) == [
        f'<img src="/blog/{HERO_PATH}" alt="Hero {{{{ site.data.secret.value }}}} ] (x). Start a free trial" />'
    ]
    # The writer's https links stay links; its image becomes a link to it (no tracking pixel), "!" shown.
    assert re.findall(r'href="([^"]*)"', html) == ["https://tracker.example/p.png", "https://example.com/docs?a=1&amp;b=2"]
    assert markup(html) <= {"p", "h2", "a", "img"}  # no <script>, <b>, comment or event attribute reached the page
    text = unescape(re.sub(r"<[^>]+>", "", html))  # what a reader sees, as written
    for shown in (
        "<script>alert(1)</script>",
        "{% include /etc/passwd %}",
        "{% endraw %}{{ x }}",
        "{{ site.data.secret.value }}",
        "[x](javascript:alert(1))",
        "and !pixel and",
        '{: onclick="alert(3)"}',
        "\\[escaped](javascript:alert(4))",
        "[ref]: javascript:alert(6)",
        "$$ x^2 $$",
    ):
        assert shown in text, shown


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([*"{}%-[]()!<>&\\$:`#*_ \n\rax/", "endraw", "raw", "https://e.x/"]) | st.characters(), max_size=80
    ).map("".join)
)
def test_no_text_reaches_liquid_or_html(text: str) -> None:
    body, alt = body_text(text), inline_text(text)
    env = Environment()
    for made in (body, alt):
        assert not set(made) & set("<>{}")
        assert env.from_string(made).render() == made  # Liquid finds nothing to do
    assert "\n" not in alt and "\r" not in alt


def test_single_line_folds_every_break_and_control() -> None:
    assert single_line("a\r\nb\u2028c\u2029d\x85e\x0bf\x0cg\x00h\ti  j\n") == "a b c d e f g h i j"


def test_paths_follow_the_post() -> None:
    assert hero_path(DAY, "spring-launch") == HERO_PATH
    with pytest.raises(ValueError):
        hero_path(DAY, "../x")


# Not skipped when missing: `make test` installs Debian's jekyll (a missing engine must fail, never pass silently).
def test_jekyll_builds_the_post_with_its_hero_and_runs_nothing_from_the_copy(tmp_path: Path) -> None:
    image, _ = hero(tmp_path / "assets-store")
    post = blog_post(campaign(author="Dana <i>Reyes</i>"), copy(title=HOSTILE_TITLE, body=HOSTILE_BODY), DAY, KEY, image)
    site = tmp_path / "site"
    for path, data in {
        **post.files(),
        "_config.yml": b'baseurl: "/blog"\n',
        "_data/secret.yml": b"value: DATA-SECRET\n",
        "_layouts/post.html": b'<h1>{{ page.title | escape }}</h1><p class="by">{{ page.author | escape }}</p>'
        b'<meta content="{{ page.image.path | relative_url }}">{{ content }}',
    }.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)
    built = subprocess.run(
        ["jekyll", "build", "--safe", "-s", str(site), "-d", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path)},
    )
    assert built.returncode == 0, built.stderr
    [page] = (tmp_path / "out").rglob("spring-launch.html")
    html = page.read_text()
    assert "SECRET" not in html and markup(html) <= {"h1", "p", "meta", "h2", "a", "img"}
    title = "Launch # Heading ## Other \U0001f680 &lt;b&gt;bold&lt;/b&gt; {{ site.title }}"  # one line, escaped by the theme
    assert re.findall(r"<h1>(.*?)</h1>", html) == [title]
    assert '<h2 id="why-it-matters">Why it matters</h2>' in html and '<p class="by">Dana &lt;i&gt;Reyes&lt;/i&gt;</p>' in html
    assert re.findall(r"<img [^>]*>", html) == [
        f'<img src="/blog/{HERO_PATH}" alt="Every pipeline on one page. Start a free trial" />'
    ]
    assert f'<meta content="/blog/{HERO_PATH}">' in html
    assert re.findall(r'href="([^"]*)"', html) == ["https://tracker.example/p.png", "https://example.com/docs?a=1&amp;b=2"]
    text = unescape(re.sub(r"<[^>]+>", "", html))
    for shown in (
        "<script>alert(1)</script>",
        "{% include /etc/passwd %}",
        "{% endraw %}{{ x }}",
        "[x](javascript:alert(1))",
        "{: onclick=",
        "{::nomarkdown}<b>raw</b>{:/nomarkdown}",
    ):  # kramdown makes the quotes typographic
        assert shown in text, shown
    decoded((tmp_path / "out" / HERO_PATH).read_bytes(), image)  # Jekyll copied the hero as it is


# --- the step: the design phase's blog image goes with the post ----------------------------------
def test_publish_blog_step_commits_the_rendered_blog_image_as_the_hero(tmp_path: Path) -> None:
    image, store = hero(tmp_path / "assets")
    plan = plan_run(campaign(), "campaign_spring-launch", "manual__2026-03-02", {}).model_dump(mode="json")
    results = {"validate_conf": plan, "design.render_image": [image.model_dump(), None]}
    blog = GitBlog("campaign_blog", tmp_path / "blog.git")
    ctx = steps.StepContext(
        current=campaign(),
        dag_id="campaign_spring-launch",
        run_id="manual__2026-03-02",
        run_date=DAY,
        conf={},
        pull=results.get,
        open_port={"blog": blog}.__getitem__,
        open_assets=lambda: store,
    )
    effect = steps._publish_blog(ctx, copy())
    assert effect.ref["image"] == HERO_PATH and effect.key.endswith("-blog")
    decoded(git("--git-dir", str(tmp_path / "blog.git"), "show", f"main:{HERO_PATH}"), image)
    results["design.render_image"] = [None]  # a run whose blog image was not rendered (a context is one task's)
    with pytest.raises(ValueError, match="no rendered blog image"):
        steps._publish_blog(dataclasses.replace(ctx), copy())


# --- local git -----------------------------------------------------------------------------------
def test_git_commits_post_and_hero_together_adopts_and_undoes_both(tmp_path: Path) -> None:
    image, _ = hero(tmp_path / "assets")
    remote, post = tmp_path / "blog.git", blog_post(campaign(), copy(), DAY, KEY, image)
    blog = GitBlog("campaign_blog", remote)
    effect = blog.publish(post)
    assert subjects(remote) == [f"Publish {POST_PATH} ({KEY})", "Initial commit"]  # one commit, both files
    files = git("--git-dir", str(remote), "show", "--name-only", "--format=", "main").decode().split()
    assert sorted(files) == [POST_PATH, HERO_PATH]
    decoded(git("--git-dir", str(remote), "show", f"main:{HERO_PATH}"), image)
    front, body = front_and_body(git("--git-dir", str(remote), "show", f"main:{POST_PATH}").decode())
    assert front["image"]["path"] == "/" + HERO_PATH and f'"/{HERO_PATH}" | relative_url' in body.split("\n", 1)[0]
    assert effect.ref["image"] == HERO_PATH and effect.ref["image_blob"] == git_blob_sha(image.data or b"")

    assert GitBlog("campaign_blog", remote).publish(post) == effect  # a retry adopts: no second commit
    assert len(subjects(remote)) == 2
    assert blog.undo(effect) is True
    assert subjects(remote)[0] == f"Unpublish {POST_PATH} ({KEY})"
    listing = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main").decode().split()
    assert listing == ["README.md"]
    assert blog.undo(effect) is False and len(subjects(remote)) == 3  # twice: nothing more


def test_git_undo_from_the_plan_after_a_crash(tmp_path: Path) -> None:
    image, _ = hero(tmp_path / "assets")
    remote, post = tmp_path / "blog.git", blog_post(campaign(), copy(), DAY, KEY, image)
    blog = GitBlog("campaign_blog", remote)
    planned = blog.plan(post)
    assert not remote.exists() and planned.ref == {
        "remote": str(remote),
        "branch": "main",
        "path": POST_PATH,
        "key": KEY,
        "image": HERO_PATH,
    }  # no I/O
    blog.publish(post)  # made, then the task died before recording it: only the plan is in the ledger
    assert blog.undo(planned) is True
    assert Git(remote).read("main", POST_PATH) is None and Git(remote).read("main", HERO_PATH) is None
    assert blog.undo(planned) is False
    assert GitBlog("campaign_blog", tmp_path / "other.git").undo(planned) is False  # never published there


def test_git_undo_leaves_what_is_not_this_posts(tmp_path: Path) -> None:
    image, _ = hero(tmp_path / "assets")
    remote = tmp_path / "blog.git"
    blog = GitBlog("campaign_blog", remote)
    first = blog.publish(blog_post(campaign(), copy(), DAY, "spring-launch-run1-blog", image))
    # A later run of the same day: another post at the path, showing the same (identical) hero.
    blog.publish(blog_post(campaign(), copy(body="Second run"), DAY, "spring-launch-run2-blog", image))
    assert blog.undo(first) is False
    assert b"Second run" in (Git(remote).read("main", POST_PATH) or b"")
    decoded(Git(remote).read("main", HERO_PATH) or b"", image)

    # Our post, but someone replaced the image: the post goes, their image stays.
    other, _ = hero(tmp_path / "assets2", headline="Another image")
    third = blog.publish(blog_post(campaign(), copy(body="Third"), DAY, "spring-launch-run3-blog", image))
    blog.publish(blog_post(campaign(), copy(body="Third"), DAY, "someone-else-blog", other))
    assert blog.undo(third) is True
    assert Git(remote).read("main", POST_PATH) is None
    decoded(Git(remote).read("main", HERO_PATH) or b"", other)


def test_git_refuses_a_hero_whose_bytes_changed(tmp_path: Path) -> None:
    image, _ = hero(tmp_path / "assets")
    post = blog_post(campaign(), copy(), DAY, KEY, image.model_copy(update={"data": b"not the rendered image"}))
    with pytest.raises(ValueError, match="changed since it was rendered"):
        GitBlog("campaign_blog", tmp_path / "blog.git").publish(post)


# --- GitHub --------------------------------------------------------------------------------------
@pytest.fixture
def double() -> Iterator[GithubDouble]:
    with GithubDouble() as gh:
        yield gh


def github(double: GithubDouble, **extra: Any) -> GithubBlog:
    extra_json = json.dumps({"repository": "acme/campaigns", **extra})
    return GithubBlog(
        "campaign_blog",
        Connection(conn_id="campaign_blog", conn_type="github", host=double.url, password="test-token", extra=extra_json),
    )


def writes(double: GithubDouble) -> list[tuple[str, str]]:
    return [(m, p.removeprefix("/api/v3/repos/acme/campaigns")) for m, p in double.calls if m != "GET"]


ONE_COMMIT = [
    ("POST", "/git/blobs"),
    ("POST", "/git/blobs"),
    ("POST", "/git/trees"),
    ("POST", "/git/commits"),
    ("PATCH", "/git/refs/heads/main"),
]


def test_github_commits_post_and_hero_in_one_commit_adopts_and_undoes_both(double: GithubDouble, tmp_path: Path) -> None:
    image, _ = hero(tmp_path)
    post = blog_post(campaign(), copy(), DAY, KEY, image)
    effect = github(double).publish(post)
    assert writes(double) == ONE_COMMIT  # the git data API: one commit, no contents API writes
    [head, initial] = double.commits("main")
    assert head["message"].startswith(f"Publish {POST_PATH} ({KEY})") and head["parents"] == [initial["sha"]]
    files = double.files("main")
    assert sorted(files) == sorted(["README.md", POST_PATH, HERO_PATH]) and files[POST_PATH] == post.markdown.encode()
    decoded(files[HERO_PATH], image)
    front, _ = front_and_body(files[POST_PATH].decode())
    assert front["image"]["path"] == "/" + HERO_PATH
    assert effect.ref == {
        "repository": "acme/campaigns",
        "branch": "main",
        "path": POST_PATH,
        "blob_sha": git_blob_sha(post.markdown.encode()),
        "image": HERO_PATH,
        "image_blob_sha": git_blob_sha(image.data or b""),
        "commit": head["sha"],
        "url": f"{double.root_url}/acme/campaigns/blob/{head['sha']}/{POST_PATH}",
    }

    again = github(double).publish(post)  # a retry adopts both files
    assert len(writes(double)) == len(ONE_COMMIT) and again.ref["blob_sha"] == effect.ref["blob_sha"]
    assert github(double).undo(effect) is True
    assert sorted(double.files("main")) == ["README.md"]
    assert double.commits("main")[0]["message"] == f"Unpublish {POST_PATH} ({KEY})" and len(double.commits("main")) == 3
    assert github(double).undo(effect) is False and len(double.commits("main")) == 3
    assert double.problems == []


def test_github_retry_completes_a_half_present_post_and_undo_works_from_the_plan(double: GithubDouble, tmp_path: Path) -> None:
    image, _ = hero(tmp_path)
    post = blog_post(campaign(), copy(), DAY, KEY, image)
    backend = github(double)
    planned = backend.plan(post)
    assert double.calls == [] and planned.ref["image_blob_sha"] == git_blob_sha(image.data or b"")  # no I/O
    assert backend.undo(planned) is False  # never published
    backend.publish(post)
    double.commit_file("main", HERO_PATH, None, "An editor deleted the image")
    before = len(writes(double))
    backend.publish(post)  # the retry puts back only what is missing
    assert writes(double)[before:] == [("POST", "/git/blobs"), *ONE_COMMIT[2:]]
    decoded(double.files("main")[HERO_PATH], image)
    assert backend.undo(planned) is True  # a crash after the call: only the plan was recorded
    assert POST_PATH not in double.files("main") and HERO_PATH not in double.files("main")
    assert backend.undo(planned) is False
    assert double.problems == []


def test_github_never_overwrites_or_deletes_someone_elses_files(double: GithubDouble, tmp_path: Path) -> None:
    image, _ = hero(tmp_path)
    post = blog_post(campaign(), copy(), DAY, KEY, image)
    double.commit_file("main", HERO_PATH, b"a photo by a person")
    with pytest.raises(ServiceError) as refused:
        github(double).publish(post)
    assert not refused.value.retryable and HERO_PATH in str(refused.value) and "not ours" in str(refused.value)
    assert writes(double) == [] and POST_PATH not in double.files("main")

    double.commit_file("main", HERO_PATH, None)
    effect = github(double).publish(post)
    double.commit_file("main", POST_PATH, b"a later post by the editor\n")  # the path is another post's now
    assert github(double).undo(effect) is False
    assert double.files("main")[POST_PATH] == b"a later post by the editor\n"
    decoded(double.files("main")[HERO_PATH], image)  # left: the post there may show it

    double.commit_file("main", POST_PATH, None)  # that post gone too: the image is ours alone again
    assert github(double).undo(effect) is True and HERO_PATH not in double.files("main")
    assert double.problems == []


def test_github_publish_reads_again_when_someone_commits_in_between(double: GithubDouble, tmp_path: Path) -> None:
    image, _ = hero(tmp_path)
    post = blog_post(campaign(), copy(), DAY, KEY, image)
    # Someone else commits between our reading the branch and moving it: GitHub refuses the update.
    double.meanwhile("PATCH", r".*/git/refs/heads/main", lambda: double.commit_file("main", "about.md", b"about\n"))
    effect = github(double).publish(post)
    assert double.count("PATCH", r".*/git/refs/heads/main") == 2 and double.count("POST", r".*/git/commits") == 2
    history = double.commits("main")
    assert history[0]["sha"] == effect.ref["commit"] and history[1]["message"] == "Edit by someone else"
    assert sorted(double.files("main")) == sorted(["README.md", "about.md", POST_PATH, HERO_PATH])
    # ... and when undoing: the other commit stays, ours goes.
    double.meanwhile("PATCH", r".*/git/refs/heads/main", lambda: double.commit_file("main", "team.md", b"team\n"))
    assert github(double).undo(effect) is True
    assert sorted(double.files("main")) == sorted(["README.md", "about.md", "team.md"])
    assert double.problems == []
