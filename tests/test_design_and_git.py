"""Images with Pillow and the two git backends, on real files and real repositories."""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from PIL import Image as PILImage

from include.orchestrator.backends.git_repo import Git, GitBlog, GitReview, list_branches, read_file
from include.orchestrator.backends.images import PillowDesign
from include.orchestrator.ports import BlogPost, ImageSpec, ReviewBundle


def spec(channel: str = "email", key: str = "launch-abc123-image-email") -> ImageSpec:
    return ImageSpec(key=key, channel=channel, width=1200, height=400, headline="Pipewise 3: every pipeline on one page",
                     subline="Start a free trial", background="#0f172a", foreground="#f8fafc", accent="#22d3ee")


def git_log(git_dir: Path, ref: str) -> list[str]:
    out = subprocess.run(["git", "--git-dir", str(git_dir), "log", "--format=%s", ref], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_png_is_real_deterministic_and_undoable(tmp_path):
    design = PillowDesign("campaign_design", tmp_path)
    image, effect = design.render(spec())
    with PILImage.open(image.path) as png:
        assert png.format == "PNG" and png.size == (1200, 400)
    first = Path(image.path).read_bytes()
    again, _ = design.render(spec())
    assert Path(again.path).read_bytes() == first and again.sha256 == image.sha256
    assert len(list(tmp_path.glob("*.png"))) == 1
    assert design.undo(effect) is True and design.undo(effect) is False
    with pytest.raises(ValueError):
        design.render(spec(key="../escape"))


def bundle(tmp_path: Path) -> ReviewBundle:
    image, _ = PillowDesign("d", tmp_path / "img").render(spec())
    return ReviewBundle(key="launch-abc123-review", campaign_slug="launch", title="Review Launch", markdown="# Review\n", images=[image])


def test_review_branch_is_created_adopted_and_deleted(tmp_path):
    repo = tmp_path / "review-repo"
    review = GitReview("campaign_review", repo)
    effect = review.open_review(bundle(tmp_path))
    assert "review/launch-abc123-review" in list_branches(repo)
    assert read_file(repo / ".git", effect.ref["branch"], "reviews/launch/launch-abc123-review/README.md") == "# Review\n"
    png = Git(repo / ".git").read(effect.ref["branch"], "reviews/launch/launch-abc123-review/launch-abc123-image-email.png")
    assert png and png.startswith(b"\x89PNG")
    again = review.open_review(bundle(tmp_path))
    assert again.ref["commit"] == effect.ref["commit"]  # a retry adopts, no second commit
    assert git_log(repo / ".git", "main") == ["Initial commit"]
    assert review.undo(effect) is True and review.undo(effect) is False
    assert list_branches(repo) == ["main"]


def post(key: str = "launch-abc123-blog", path: str = "_posts/2026-11-24-launch.md") -> BlogPost:
    return BlogPost(key=key, path=path, title="Launch", markdown="---\ntitle: \"Launch\"\n---\nHello\n")


def test_blog_post_is_pushed_adopted_and_unpublished(tmp_path):
    remote = tmp_path / "blog.git"
    blog = GitBlog("campaign_blog", remote)
    effect = blog.publish(post())
    assert read_file(remote, "main", "_posts/2026-11-24-launch.md").endswith("Hello\n")
    assert blog.publish(post()).ref["commit"] == effect.ref["commit"]
    assert len(git_log(remote, "main")) == 2
    assert blog.undo(effect) is True
    assert read_file(remote, "main", "_posts/2026-11-24-launch.md") is None
    assert git_log(remote, "main")[0].startswith("Unpublish _posts/2026-11-24-launch.md")
    assert blog.undo(effect) is False


@pytest.mark.parametrize("bad", [{"path": "../../etc/passwd"}, {"key": "x; rm -rf /"}, {"path": "_posts/a b.md"}])
def test_unsafe_names_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        GitBlog("campaign_blog", tmp_path / "blog.git").publish(post(**bad))


def _publish(args: tuple[str, int]) -> str:
    remote, i = args
    return GitBlog("campaign_blog", Path(remote)).publish(post(key=f"k{i}", path=f"_posts/p{i}.md")).ref["commit"]


def test_concurrent_publishers_keep_every_post(tmp_path):
    remote = tmp_path / "blog.git"
    GitBlog("campaign_blog", remote).publish(post())
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_publish, [(str(remote), i) for i in range(6)]))
    assert all(read_file(remote, "main", f"_posts/p{i}.md") for i in range(6))
