"""Review and blog ports, local backends: real git repositories driven by the git CLI.

Commits are built with git's plumbing (blobs, a private index, ``commit-tree``) so no working
tree is ever touched and nothing depends on the user's git configuration. Branch moves use
``update-ref`` / ``push`` with the expected old value, so two processes never overwrite each
other's work. Names come from campaign slugs and run keys and are checked against a strict
pattern before they reach git; arguments are always a list, never a shell string.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from include.orchestrator.ports import BlogPost, Effect, ReviewBundle

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,150}$")
_PATH = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_./-]{0,200}$")
_IDENTITY = {
    "GIT_AUTHOR_NAME": "campaign-orchestrator",
    "GIT_AUTHOR_EMAIL": "campaigns@localhost",
    "GIT_COMMITTER_NAME": "campaign-orchestrator",
    "GIT_COMMITTER_EMAIL": "campaigns@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


class GitError(RuntimeError):
    pass


def checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"{what} {value!r} is not allowed (letters, digits, '-', '/' and '.' only; no '..')")
    return value


class Git:
    """One repository (bare or not), with the few operations both backends need."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir

    def run(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["git", "--git-dir", str(self.git_dir), "-c", "protocol.file.allow=always", *args],
            input=stdin,
            capture_output=True,
            env={**os.environ, **_IDENTITY, **(env or {})},
        )
        if check and result.returncode != 0:
            raise GitError(f"git {' '.join(args[:2])} failed in {self.git_dir}: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout.decode().strip() if result.returncode == 0 else ""

    def rev(self, ref: str) -> str:
        return self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)

    def read(self, ref: str, path: str) -> bytes | None:
        result = subprocess.run(
            ["git", "--git-dir", str(self.git_dir), "cat-file", "blob", f"{ref}:{path}"], capture_output=True, env={**os.environ, **_IDENTITY}
        )
        return result.stdout if result.returncode == 0 else None

    def commit(self, parent: str | None, message: str, add: dict[str, bytes], remove: tuple[str, ...] = ()) -> str:
        """A commit of ``parent``'s tree with files added/replaced and removed; returns its sha."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if parent:
                self.run("read-tree", parent, env=env)
            for path, data in add.items():
                blob = self.run("hash-object", "-w", "--stdin", stdin=data)
                self.run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            for path in remove:  # git wants a work tree here; an empty one changes nothing
                self.run("--work-tree", tmp, "update-index", "--force-remove", path, env=env)
            tree = self.run("write-tree", env=env)
        return self.run("commit-tree", tree, *(["-p", parent] if parent else []), "-m", message)

    def tree_of(self, ref: str) -> str:
        return self.run("rev-parse", f"{ref}^{{tree}}")

    def branches(self) -> list[str]:
        return self.run("for-each-ref", "--format=%(refname:short)", "refs/heads").splitlines()


def _init(path: Path, bare: bool, branch: str) -> Git:
    git = Git(path if bare else path / ".git")
    if not (git.git_dir / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", *(["--bare"] if bare else []), "-b", branch, str(path)], check=True, env={**os.environ, **_IDENTITY})
    if not git.rev(branch):
        first = git.commit(None, "Initial commit", {"README.md": b"Managed by the campaign orchestrator.\n"})
        git.run("update-ref", f"refs/heads/{branch}", first, "")
        if not bare:
            git.run("--work-tree", str(path), "reset", "-q", "--hard", branch)
    return git


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise writers of one repository across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def list_branches(repo: Path) -> list[str]:
    return Git(repo / ".git" if (repo / ".git").exists() else repo).branches()


def read_file(remote: Path, branch: str, path: str) -> str | None:
    data = Git(remote).read(branch, path)
    return None if data is None else data.decode()


class GitReview:
    """Review port: the bundle committed on ``review/<key>`` of a local repository."""

    def __init__(self, conn_id: str, path: Path) -> None:
        self.conn_id, self.path = conn_id, Path(path)

    def open_review(self, bundle: ReviewBundle) -> Effect:
        key = checked(bundle.key, _NAME, "review key")
        folder = f"reviews/{checked(bundle.campaign_slug, _NAME, 'campaign slug')}/{key}"
        files = {f"{folder}/README.md": bundle.markdown.encode()}
        files.update({f"{folder}/{Path(i.path).name}": Path(i.path).read_bytes() for i in bundle.images})
        branch = f"review/{key}"
        with locked(self.path):
            git = _init(self.path, bare=False, branch="main")
            head = git.rev(branch)
            commit = git.commit(head or git.rev("main"), f"{bundle.title}\n\nReview bundle {key}", files)
            if head and git.tree_of(head) == git.tree_of(commit):
                commit = head  # a retry: the branch already holds this bundle, adopt it
            else:
                git.run("update-ref", f"refs/heads/{branch}", commit, head or "")
        return Effect(
            port="review",
            conn_id=self.conn_id,
            backend="git",
            kind="git_branch",
            ref={"repo": str(self.path), "branch": branch, "commit": commit},
            summary=f"review branch {branch} ({commit[:10]}) in {self.path}",
        )

    def undo(self, effect: Effect) -> bool:
        branch = effect.ref["branch"]
        checked(branch.removeprefix("review/"), _NAME, "review branch")
        with locked(self.path):
            git = _init(self.path, bare=False, branch="main")
            head = git.rev(branch)
            if not head:
                return False
            git.run("update-ref", "-d", f"refs/heads/{branch}", head)
        return True


class GitBlog:
    """Blog port: posts committed in a private clone and pushed to a bare remote repository."""

    def __init__(self, conn_id: str, path: Path, branch: str = "main") -> None:
        self.conn_id, self.remote, self.branch = conn_id, Path(path), checked(branch, _NAME, "branch")
        self.clone = self.remote.with_name(self.remote.name + ".work")

    def _sync(self) -> Git:
        _init(self.remote, bare=True, branch=self.branch)
        if not (self.clone / "HEAD").exists():
            subprocess.run(["git", "clone", "-q", "--bare", str(self.remote), str(self.clone)], check=True, env={**os.environ, **_IDENTITY})
        clone = Git(self.clone)
        clone.run("fetch", "-q", str(self.remote), f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}")
        return clone

    def _push(self, clone: Git, commit: str) -> None:
        clone.run("push", "-q", str(self.remote), f"{commit}:refs/heads/{self.branch}")

    def publish(self, post: BlogPost) -> Effect:
        path = checked(post.path, _PATH, "post path")
        key = checked(post.key, _NAME, "post key")
        data = post.markdown.encode()
        with locked(self.remote):
            clone = self._sync()
            tip = clone.rev(f"origin/{self.branch}")
            marked = clone.run("log", "-1", "--format=%H", "-F", f"--grep=Publish {path} ({key})", f"origin/{self.branch}")
            if marked and clone.read(f"origin/{self.branch}", path) == data:
                commit = marked  # already published by an earlier try: adopt it
            else:
                commit = clone.commit(tip, f"Publish {path} ({key})\n\n{post.title}", {path: data})
                self._push(clone, commit)
        return Effect(
            port="blog",
            conn_id=self.conn_id,
            backend="git",
            kind="git_commit",
            ref={"remote": str(self.remote), "branch": self.branch, "path": path, "commit": commit, "key": key},
            summary=f"blog post {path} at {commit[:10]} on {self.remote}:{self.branch}",
        )

    def undo(self, effect: Effect) -> bool:
        path = checked(effect.ref["path"], _PATH, "post path")
        with locked(self.remote):
            clone = self._sync()
            if clone.read(f"origin/{self.branch}", path) is None:
                return False
            tip = clone.rev(f"origin/{self.branch}")
            commit = clone.commit(tip, f"Unpublish {path} ({effect.ref.get('key', '')})", {}, remove=(path,))
            self._push(clone, commit)
        return True
