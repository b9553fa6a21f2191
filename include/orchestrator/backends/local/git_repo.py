"""Review and blog ports, local backends: real git repositories driven by the git CLI.

``GitReview`` commits a review bundle on a branch ``review/<key>`` of a local repository;
``GitBlog`` publishes posts, each with its hero image in one commit, to a bare repository acting as
the remote, through a private clone.
Both use the small :class:`Git` helper below.

Commits are built with git's plumbing (blobs, a private temporary index, ``commit-tree``), so no
working tree or real index is ever touched and nothing depends on a checkout's state. Every git
command runs with a fixed identity, without system or global configuration and without inherited
``GIT_*`` variables, so the user's set-up cannot change what happens. Branch names and paths come
from campaign slugs and run keys: they are checked against strict patterns before they reach git,
and arguments are always a list, never a shell string. Writers of one repository are serialised
by an ``fcntl`` lock file beside it; ref updates also carry the expected old value.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.backends.common.folder import OnDisk
from include.orchestrator.backends.common.git_names import safe_branch, safe_name, safe_path
from include.orchestrator.domain.blog_format import described
from include.orchestrator.domain.ports import BlogPost, Effect, ReviewBundle, checked_bytes
from include.orchestrator.errors import GitError

log = logging.getLogger(__name__)

_ENV = {
    "GIT_AUTHOR_NAME": "campaign-orchestrator",
    "GIT_AUTHOR_EMAIL": "campaigns@localhost",
    "GIT_COMMITTER_NAME": "campaign-orchestrator",
    "GIT_COMMITTER_EMAIL": "campaigns@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",  # stable messages: push rejections are recognised by their text
}
_TIMEOUT = 120  # seconds; a local git command that takes longer is stuck


def _git(args: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    """Run one git command (no shell) and return its stdout; GitError with git's stderr if it fails."""
    # Inherited GIT_DIR, GIT_INDEX_FILE, GIT_WORK_TREE... would redirect every command: drop them.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    result = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env={**clean, **_ENV, **(env or {})},
        timeout=_TIMEOUT,
    )
    if result.returncode != 0:
        raise GitError(f"git {' '.join(args[:3])} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


class Git:
    """One repository, addressed by its git directory (a bare repository or a ``.git`` folder)."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = Path(git_dir)

    @classmethod
    def at(cls, repo: Path) -> Git:
        """A working repository's ``.git`` folder, or the path itself for a bare one."""
        return cls(repo / ".git" if (repo / ".git").is_dir() else repo)

    def exists(self) -> bool:
        return (self.git_dir / "HEAD").is_file()

    def run(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> str:
        return _git(["--git-dir", str(self.git_dir), *args], stdin=stdin, env=env).decode().strip()

    def rev(self, ref: str) -> str | None:
        """The commit ``ref`` names, or None if there is no such ref."""
        try:
            return self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        except GitError:
            return None

    def blob_id(self, ref: str, path: str) -> str | None:
        try:
            return self.run("rev-parse", "--verify", "--quiet", f"{ref}:{path}")
        except GitError:
            return None

    def read(self, ref: str, path: str) -> bytes | None:
        try:
            return _git(["--git-dir", str(self.git_dir), "cat-file", "blob", f"{ref}:{path}"])
        except GitError:
            return None

    def symbolic_head(self) -> str | None:
        """The branch HEAD points at, None when detached."""
        try:
            return self.run("symbolic-ref", "-q", "HEAD")
        except GitError:
            return None

    def branches(self) -> list[str]:
        return self.run("for-each-ref", "--format=%(refname:short)", "refs/heads").splitlines()

    def commit(self, parent: str | None, message: str, add: dict[str, bytes], remove: tuple[str, ...] = ()) -> str:
        """A new commit: ``parent``'s tree with files added or replaced and removed; returns its sha."""
        lines = [f"100644 {self.run('hash-object', '-w', '--stdin', stdin=data)}\t{path}" for path, data in add.items()]
        lines += [f"0 {'0' * 40}\t{path}" for path in remove]  # mode 0 removes the entry
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}  # private index: the real one stays as it is
            if parent:
                self.run("read-tree", parent, env=env)
            self.run("update-index", "--index-info", stdin="".join(f"{line}\n" for line in lines).encode(), env=env)
            tree = self.run("write-tree", env=env)
        return self.run("commit-tree", tree, *(["-p", parent] if parent else []), "-m", message)

    def same_tree(self, a: str, b: str) -> bool:
        return self.run("rev-parse", f"{a}^{{tree}}") == self.run("rev-parse", f"{b}^{{tree}}")


def ensure_repo(path: Path, *, bare: bool, branch: str) -> Git:
    """Open the repository at ``path``, creating it (with an initial commit on ``branch``) if missing."""
    git = Git(path if bare else path / ".git")
    created = False
    if not git.exists():
        if path.exists() and any(path.iterdir()):
            raise GitError(f"{path} exists, is not empty and is not a git repository: refusing to make it one")
        path.mkdir(parents=True, exist_ok=True)
        _git(["init", "-q", *(["--bare"] if bare else []), "-b", branch, str(path)])
        created = True
    if not git.rev(f"refs/heads/{branch}"):
        first = git.commit(None, "Initial commit", {"README.md": b"Managed by the campaign orchestrator.\n"})
        git.run("update-ref", f"refs/heads/{branch}", first, "")  # "": only if the branch is still absent
        if created and not bare:  # our own new, empty folder: show the initial commit in it
            _git(["-C", str(path), "reset", "-q", "--hard", branch])
    return git


@contextmanager
def locked(repo: Path) -> Iterator[None]:
    """Serialise writers of one repository across processes: ``<repo>.lock`` beside it."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    with open(repo.with_name(repo.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def list_branches(repo: Path) -> list[str]:
    """Local branch names of a working or bare repository."""
    return Git.at(Path(repo)).branches()


def read_file(remote: Path, branch: str, path: str) -> str | None:
    """The text of ``path`` on ``branch`` of a working or bare repository, None if absent."""
    data = Git.at(Path(remote)).read(f"refs/heads/{safe_branch(branch)}", safe_path(path))
    return None if data is None else data.decode()


class GitReview(OnDisk, MakesEffects):
    """Review port: the bundle committed on ``review/<key>`` of a local (non-bare) repository."""

    port, backend, kind = "review", "git", "git_branch"
    needs = "one host"  # file locks (fcntl) that hosts sharing a network disk cannot rely on

    def __init__(self, conn_id: str, path: Path) -> None:
        self.conn_id, self.path = conn_id, Path(path)

    def _files(self, bundle: ReviewBundle, folder: str) -> dict[str, bytes]:
        files = {f"{folder}/README.md": bundle.markdown.encode()}
        for image in bundle.images:
            name, data = safe_path(image.url.rsplit("/", 1)[-1]), checked_bytes(image)
            if f"{folder}/{name}" in files:
                raise ValueError(f"two files of review {bundle.key!r} are both named {name!r}")
            files[f"{folder}/{name}"] = data
        return files

    def plan(self, bundle: ReviewBundle) -> Effect:
        branch = f"review/{safe_name(bundle.key, 'review key')}"
        return self._effect(bundle.key, {"repo": str(self.path), "branch": branch}, f"review branch {branch} in {self.path}")

    def open_review(self, bundle: ReviewBundle) -> Effect:
        effect, key = self.plan(bundle), bundle.key
        folder = f"reviews/{safe_name(bundle.campaign_slug, 'campaign slug')}/{key}"
        files, branch = self._files(bundle, folder), effect.ref["branch"]
        with locked(self.path):
            git = ensure_repo(self.path, bare=False, branch="main")
            head = git.rev(f"refs/heads/{branch}")
            commit = git.commit(head or git.rev("refs/heads/main"), f"{bundle.title}\n\nReview bundle {key}", files)
            if head and git.same_tree(head, commit):
                commit = head  # a retry: the branch already holds this bundle, adopt it (the new commit stays unreferenced)
            else:
                git.run("update-ref", f"refs/heads/{branch}", commit, head or "")
        return effect.model_copy(
            update={"ref": {**effect.ref, "commit": commit}, "summary": f"review branch {branch} ({commit[:10]}) in {self.path}"}
        )

    def undo(self, effect: Effect) -> bool:
        branch = effect.ref["branch"]
        safe_name(branch.removeprefix("review/"), "review branch")
        with locked(self.path):
            git = Git(self.path / ".git")
            head = git.rev(f"refs/heads/{branch}") if git.exists() else None
            if not head:
                return False
            if git.symbolic_head() == f"refs/heads/{branch}":
                git.run("update-ref", "--no-deref", "HEAD", head)  # a reviewer's checkout: detach it, not dangle
            git.run("update-ref", "-d", f"refs/heads/{branch}", head)
        return True


class GitBlog(OnDisk, MakesEffects):
    """Blog port: posts committed in a private clone and pushed to a bare remote repository."""

    port, backend, kind = "blog", "git", "git_commit"
    needs = "one host"  # file locks (fcntl) that hosts sharing a network disk cannot rely on

    def __init__(self, conn_id: str, path: Path, branch: str = "main") -> None:
        self.conn_id, self.remote, self.branch = conn_id, Path(path), safe_branch(branch)
        self.clone = self.remote.with_name(self.remote.name + ".work")  # private: only we write there
        self.tracking = f"refs/remotes/origin/{self.branch}"

    def disk_id(self) -> str:
        return self.disk_of(self.remote)

    def _fetch(self, clone: Git) -> None:
        clone.run("fetch", "-q", "--no-tags", str(self.remote), f"+refs/heads/{self.branch}:{self.tracking}")

    def _sync(self) -> Git:
        ensure_repo(self.remote, bare=True, branch=self.branch)
        clone = Git(self.clone)
        if not clone.exists():
            _git(["clone", "-q", "--bare", str(self.remote), str(self.clone)])
        self._fetch(clone)
        return clone

    def _push(self, clone: Git, change: Callable[[str], str | None]) -> str | None:
        """Commit ``change(tip)`` and push it; if the remote moved meanwhile (push rejected), fetch,
        rebuild the change on the new tip (our one-commit rebase) and push once more."""
        for attempt in (1, 2):
            commit = change(clone.rev(self.tracking) or "")
            if commit is None:
                return None
            try:
                clone.run("push", "-q", str(self.remote), f"{commit}:refs/heads/{self.branch}")
                return commit
            except GitError as error:
                if attempt == 2 or "rejected" not in str(error):
                    raise
                log.warning("push to %s was rejected, fetching and retrying once: %s", self.remote, error)
                self._fetch(clone)
        raise AssertionError("unreachable")

    def plan(self, post: BlogPost) -> Effect:
        path, key = safe_path(post.path), safe_name(post.key, "post key")
        ref = {"remote": str(self.remote), "branch": self.branch, "path": path, "key": key}
        if post.hero is not None:
            ref["image"] = safe_path(post.hero_path)
        return self._effect(key, ref, f"{described(ref)} on {self.remote}:{self.branch}")

    @staticmethod
    def _subject(path: str, key: str) -> str:
        return f"Publish {path} ({key})"

    def _published(self, clone: Git, path: str, key: str) -> str | None:
        """The commit that published ``path`` under ``key``, found by its subject: how a retry or
        an undo finds what an earlier try pushed but never reported."""
        subject = self._subject(path, key)
        found = clone.run("log", "--format=%H %s", "-F", f"--grep={subject}", self.tracking).splitlines()
        return next((line.split(" ", 1)[0] for line in found if line.split(" ", 1)[1] == subject), None)

    def publish(self, post: BlogPost) -> Effect:
        effect, files = self.plan(post), post.files()  # the post and its hero, in one commit
        path, key = effect.ref["path"], effect.key
        subject = self._subject(path, key)
        message = f"{subject}\n\n{post.title}" + (f"\n\nHero image: {post.hero_path}" if post.hero is not None else "")
        with locked(self.remote):
            clone = self._sync()
            earlier = self._published(clone, path, key)
            commit: str | None
            if earlier and all(clone.read(self.tracking, p) == data for p, data in files.items()):
                commit = earlier  # published by an earlier try: adopt it
            else:
                commit = self._push(clone, lambda tip: clone.commit(tip, message, files))
            assert commit is not None
            blobs = {p: clone.blob_id(commit, p) for p in files}
        ref = {**effect.ref, "commit": commit, "blob": blobs[path]}
        if "image" in ref:
            ref["image_blob"] = blobs[ref["image"]]
        summary = f"{described(ref)} at {commit[:10]} on {self.remote}:{self.branch}"
        return effect.model_copy(update={"ref": ref, "summary": summary})

    def undo(self, effect: Effect) -> bool:
        """Remove what the post added, in one commit: the post while it is still ours (its blob), and
        its image while it is ours and no other post took the post's path (that post shows the image)."""
        path, key = safe_path(effect.ref["path"]), effect.ref.get("key", "")
        image = safe_path(effect.ref["image"]) if effect.ref.get("image") else None  # entries from before heroes: none
        recorded = {path: effect.ref.get("blob"), **({image: effect.ref.get("image_blob")} if image else {})}

        def unpublish(tip: str) -> str | None:
            mine = recorded
            if not all(mine.values()):  # only the plan was recorded: what did our key publish, if anything?
                published = self._published(clone, path, key)
                if published is None:
                    return None  # never published
                mine = {p: clone.blob_id(published, p) for p in recorded}
            now = {p: clone.blob_id(tip, p) for p in recorded}
            post_ours = now[path] is not None and now[path] == mine[path]
            remove = [path] if post_ours else []
            if now[path] is not None and not post_ours:  # a later post replaced ours at this path: not ours to remove
                log.warning(
                    "%s on %s holds another post now (blob %s, ours %s): left alone", path, self.remote, now[path], mine[path]
                )
            if image and now[image] is not None and now[image] == mine[image] and (post_ours or now[path] is None):
                remove.append(image)
            elif image and now[image] is not None:
                log.warning("%s on %s is another's now (or the post that shows it is): left alone", image, self.remote)
            if not remove:
                return None  # already gone, or not ours
            return clone.commit(tip, f"Unpublish {path} ({key})", {}, remove=tuple(remove))

        with locked(self.remote):
            if not Git(self.remote).exists():
                return False
            clone = self._sync()
            return self._push(clone, unpublish) is not None
