"""Images with Pillow and the two git backends, on real files and real repositories (tmp_path)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from PIL import Image as PILImage

from include.orchestrator.backends.assets import AssetStore
from include.orchestrator.backends.local.git_repo import Git, GitBlog, GitReview, list_branches, read_file
from include.orchestrator.backends.local.images import PillowDesign
from include.orchestrator.domain.ports import BlogPost, Effect, ImageSpec, ReviewBundle
from include.orchestrator.errors import GitError

SIZES = {"email": (1200, 400), "social": (1200, 675), "blog": (1600, 900)}
POST_PATH = "_posts/2026-11-24-launch.md"


def spec(
    channel: str = "email", key: str = "launch-abc123-image-email", headline: str = "Pipewise 3: every pipeline on one page"
) -> ImageSpec:
    width, height = SIZES[channel]
    return ImageSpec(
        key=key,
        channel=channel,
        width=width,
        height=height,
        headline=headline,
        subline="Start a free trial",
        background="#0f172a",
        foreground="#f8fafc",
        accent="#22d3ee",
    )


def design(folder: Path) -> PillowDesign:
    """The Pillow backend on a file:// asset store in ``folder``."""
    return PillowDesign("campaign_design", AssetStore("campaign_assets", folder.resolve().as_uri()))


def read(image) -> bytes:
    return Path(image.url.removeprefix("file://")).read_bytes()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def subjects(git_dir: Path, ref: str) -> list[str]:
    return git("--git-dir", str(git_dir), "log", "--format=%s", ref).splitlines()


# --- images ----------------------------------------------------------------------------------
@pytest.mark.parametrize("channel", sorted(SIZES))
def test_png_has_the_spec_size(tmp_path, channel):
    image, effect = design(tmp_path).render(spec(channel, key=f"launch-abc123-image-{channel}"))
    assert image.url == (tmp_path / "images" / f"launch-abc123-image-{channel}.png").resolve().as_uri()
    with PILImage.open(image.url.removeprefix("file://")) as png:
        assert png.format == "PNG" and png.size == SIZES[channel] and (image.width, image.height) == SIZES[channel]
        assert png.getpixel((5, 5)) == (15, 23, 42)  # the background colour
        assert len(png.getcolors(maxcolors=1 << 16) or []) > 3  # text and accent were drawn
    assert (
        effect.kind == "stored_image" and effect.backend == "pillow" and effect.ref == {"url": image.url, "sha256": image.sha256}
    )
    assert "url" in image.model_dump() and "data" not in image.model_dump()  # XCom carries the URL, never the bytes


def test_png_is_deterministic_and_overwritten(tmp_path):
    backend = design(tmp_path)
    image, _ = backend.render(spec())
    first = read(image)
    again, _ = backend.render(spec())
    assert read(again) == first and again.sha256 == image.sha256
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["launch-abc123-image-email.png"]  # no duplicate, no temp file
    other, _ = backend.render(spec(headline="Another headline"))
    assert other.sha256 != image.sha256 and other.url == image.url  # undo: tests/backends/test_contract.py


def test_design_refuses_unsafe_keys_and_foreign_files(tmp_path):
    backend = design(tmp_path / "assets")
    with pytest.raises(ValueError):
        backend.render(spec(key="../escape"))
    victim = tmp_path / "keep.png"
    victim.write_bytes(b"x")
    for url in (victim.as_uri(), (tmp_path / "assets" / "images" / ".." / ".." / "keep.png").as_uri()):
        with pytest.raises(ValueError, match="not in the asset store"):
            backend.undo(Effect(port="design", conn_id="c", backend="pillow", kind="stored_image", key="k", ref={"url": url}))
    with pytest.raises(ValueError, match="before the asset store"):  # a ledger entry from before: a local path
        backend.undo(Effect(port="design", conn_id="c", backend="pillow", kind="file", key="k", ref={"path": str(victim)}))
    assert victim.exists()


# --- review branches -------------------------------------------------------------------------
def bundle(tmp_path: Path, markdown: str = "# Review\n\n![email](launch-abc123-image-email.png)\n") -> ReviewBundle:
    backend = design(tmp_path / "img")
    image, _ = backend.render(spec())
    image = backend.store.read_image(image)
    return ReviewBundle(
        key="launch-abc123-review", campaign_slug="launch", title="Review Launch", markdown=markdown, images=[image]
    )


def test_review_branch_is_created_adopted_and_deleted(tmp_path):
    repo, folder = tmp_path / "review-repo", "reviews/launch/launch-abc123-review"
    review = GitReview("campaign_review", repo)
    effect = review.open_review(bundle(tmp_path))
    branch = effect.ref["branch"]
    assert effect.kind == "git_branch" and branch == "review/launch-abc123-review"
    assert list_branches(repo) == ["main", branch]
    assert git("-C", str(repo), "rev-parse", branch).strip() == effect.ref["commit"]
    assert read_file(repo, branch, f"{folder}/README.md").startswith("# Review")
    png = Git.at(repo).read(branch, f"{folder}/launch-abc123-image-email.png")
    assert png and png.startswith(b"\x89PNG")
    # a retry adopts the branch: same commit, no second one
    assert review.open_review(bundle(tmp_path)) == effect
    assert subjects(repo / ".git", branch) == ["Review Launch", "Initial commit"]
    # main and its working tree are as created: nothing of the review lands there
    assert subjects(repo / ".git", "main") == ["Initial commit"]
    assert sorted(p.name for p in repo.iterdir()) == [".git", "README.md"]
    assert git("-C", str(repo), "status", "--porcelain") == ""
    # changed content on a retry becomes a new commit on the same branch
    changed = review.open_review(bundle(tmp_path, markdown="# Review v2\n"))
    assert changed.ref["commit"] != effect.ref["commit"] and len(subjects(repo / ".git", branch)) == 3
    assert review.undo(effect) is True and review.undo(effect) is False
    assert list_branches(repo) == ["main"]


def test_review_undo_detaches_a_checkout_of_the_branch(tmp_path):
    repo = tmp_path / "review-repo"
    review = GitReview("campaign_review", repo)
    effect = review.open_review(bundle(tmp_path))
    git("-C", str(repo), "checkout", "-q", effect.ref["branch"])
    assert review.undo(effect) is True
    assert git("-C", str(repo), "rev-parse", "HEAD").strip() == effect.ref["commit"]  # detached, still valid
    assert list_branches(repo) == ["main"]


def test_review_refuses_changed_images_and_foreign_folders(tmp_path):
    changed = bundle(tmp_path)
    changed.images[0] = changed.images[0].model_copy(update={"data": b"not the rendered image"})
    with pytest.raises(ValueError, match="changed since it was rendered"):
        GitReview("campaign_review", tmp_path / "repo").open_review(changed)
    unread = bundle(tmp_path)
    unread.images[0] = unread.images[0].model_copy(update={"data": None})
    with pytest.raises(ValueError, match="not read from the asset store"):
        GitReview("campaign_review", tmp_path / "repo").open_review(unread)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("mine")
    with pytest.raises(GitError, match="not a git repository"):
        GitReview("campaign_review", tmp_path / "notes").open_review(bundle(tmp_path))
    assert (tmp_path / "notes" / "README.md").read_text() == "mine"


# --- blog posts on a bare remote -------------------------------------------------------------
def post(key: str = "launch-abc123-blog", path: str = POST_PATH, body: str = "Hello") -> BlogPost:
    return BlogPost(key=key, path=path, title="Launch", markdown=f'---\ntitle: "Launch"\n---\n{body}\n')


def test_blog_post_is_pushed_adopted_and_unpublished(tmp_path):
    remote = tmp_path / "blog.git"
    blog = GitBlog("campaign_blog", remote)
    effect = blog.publish(post())
    assert effect.kind == "git_commit" and effect.ref["commit"] == git("--git-dir", str(remote), "rev-parse", "main").strip()
    assert git("--git-dir", str(remote), "show", f"main:{POST_PATH}").endswith("Hello\n")
    assert subjects(remote, "main") == [f"Publish {POST_PATH} (launch-abc123-blog)", "Initial commit"]
    assert blog.publish(post()) == effect  # a retry adopts: no new commit
    assert len(subjects(remote, "main")) == 2
    assert blog.undo(effect) is True
    assert read_file(remote, "main", POST_PATH) is None
    assert subjects(remote, "main")[0] == f"Unpublish {POST_PATH} (launch-abc123-blog)"
    assert blog.undo(effect) is False and len(subjects(remote, "main")) == 3  # history kept, nothing rewritten


def test_blog_undo_leaves_a_later_post_at_the_same_path(tmp_path):
    blog = GitBlog("campaign_blog", tmp_path / "blog.git")
    first = blog.publish(post(key="launch-run1-blog"))
    blog.publish(post(key="launch-run2-blog", body="Second run"))
    assert blog.undo(first) is False
    assert read_file(tmp_path / "blog.git", "main", POST_PATH).endswith("Second run\n")


def test_rejected_push_is_retried_after_fetch_and_rebase(tmp_path, monkeypatch):
    remote = tmp_path / "blog.git"
    blog = GitBlog("campaign_blog", remote)
    blog.publish(post())
    # someone else pushes to the remote, and our clone does not see it before committing
    other = tmp_path / "other"
    git("clone", "-q", str(remote), str(other))
    (other / "about.md").write_text("about\n")
    git("-C", str(other), "add", "about.md")
    git("-C", str(other), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "About page")
    git("-C", str(other), "push", "-q", "origin", "main")
    real_fetch, calls = GitBlog._fetch, []

    def stale_once(self: GitBlog, clone: Git) -> None:
        calls.append(1)
        if len(calls) > 1:
            real_fetch(self, clone)

    monkeypatch.setattr(GitBlog, "_fetch", stale_once)
    effect = blog.publish(post(key="launch-abc123-blog-2", path="_posts/2026-11-25-second.md"))
    assert len(calls) == 2  # skipped once, then fetched after the rejection
    assert subjects(remote, "main")[:2] == ["Publish _posts/2026-11-25-second.md (launch-abc123-blog-2)", "About page"]
    assert (
        read_file(remote, "main", "about.md") == "about\n"
        and effect.ref["commit"] == git("--git-dir", str(remote), "rev-parse", "main").strip()
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda p: GitBlog("c", p / "blog.git").publish(post(path="_posts/../../etc/passwd")),
        lambda p: GitBlog("c", p / "blog.git").publish(post(path="/etc/passwd")),
        lambda p: GitBlog("c", p / "blog.git").publish(post(path="_posts/a b.md")),
        lambda p: GitBlog("c", p / "blog.git").publish(post(path=".git/config")),
        lambda p: GitBlog("c", p / "blog.git").publish(post(key="x; rm -rf /")),
        lambda p: GitBlog("c", p / "blog.git", branch="--upload-pack=touch"),
        lambda p: GitBlog("c", p / "blog.git", branch="main/../x"),
        lambda p: GitReview("c", p / "repo").open_review(bundle(p).model_copy(update={"key": "../main"})),
        lambda p: GitReview("c", p / "repo").open_review(bundle(p).model_copy(update={"campaign_slug": "a/../.."})),
        lambda p: read_file(p, "main", "../x"),
    ],
)
def test_unsafe_names_are_refused_before_git_runs(tmp_path, make):
    with pytest.raises(ValueError):
        make(tmp_path)
    assert not (tmp_path / "blog.git").exists() and not (tmp_path / "repo").exists()


def _publish(args: tuple[str, int]) -> str:
    remote, i = args
    return GitBlog("campaign_blog", Path(remote)).publish(post(key=f"k{i}", path=f"_posts/p{i}.md")).ref["commit"]


def test_concurrent_publishers_keep_every_post(tmp_path):
    remote = tmp_path / "blog.git"
    with ProcessPoolExecutor(2) as pool:  # two OS processes racing on one remote, from its creation on
        commits = list(pool.map(_publish, [(str(remote), i) for i in range(6)]))
    assert all(read_file(remote, "main", f"_posts/p{i}.md") for i in range(6))
    assert len(set(commits)) == 6 and len(subjects(remote, "main")) == 7
    git("--git-dir", str(remote), "fsck", "--no-progress")
