"""GitHub review and blog backends against the GitHub REST double (tests/doubles/github.py).

Every test ends with ``double.problems == []``: each request our code sent was one the docs allow.

What every backend promises alike (plan without I/O, undo twice and from the planned entry, 429 with
both Retry-After forms, 5xx, timeout, refused connection) is checked in tests/backends/test_contract.py,
which builds this backend with tests/builders/github.py (as this file does); this file keeps what is this
service's own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from airflow.sdk import Connection

from include.orchestrator.backends import registry as connections
from include.orchestrator.backends.cloud.github import GithubApi, GithubBlog, GithubReview, ReviewPoll, blob_sha
from include.orchestrator.errors import ConnectionConfigError, ServiceError
from tests.builders.github import BRANCH, POST, blog, bundle, github_conn, review, writes
from tests.doubles import closed_port
from tests.doubles.github import GithubDouble, git_blob_sha


@pytest.fixture
def double() -> Iterator[GithubDouble]:
    with GithubDouble() as gh:
        yield gh


# --- review: the pull request ---------------------------------------------------------------------------------
def test_open_review_commits_the_bundle_once_and_opens_a_pull_request(double: GithubDouble, tmp_path: Path) -> None:
    b = bundle(tmp_path)
    effect = review(double).open_review(b)

    main_head = double.commits("main")[0]["sha"]
    history = double.commits(BRANCH)
    assert len(history) == 2 and history[1]["sha"] == main_head  # one commit, branched from the base head
    assert history[0]["message"] == f"{b.title}\n\nReview bundle {b.key}"
    files = double.files(BRANCH)
    assert files[f"review/{b.key}/README.md"] == b.markdown.encode()
    assert files[f"review/{b.key}/images/email.png"] == b.images[0].data
    assert files[f"review/{b.key}/images/social.png"] == b.images[1].data
    [pull] = double.open_pulls()
    assert (pull["title"], pull["head"]["ref"], pull["base"]["ref"]) == (b.title, BRANCH, "main")
    assert f"review/{b.key}/README.md" in pull["body"]
    assert (effect.port, effect.backend, effect.kind, effect.key) == ("review", "github", "github_pull_request", b.key)
    assert effect.ref == {
        "repository": "acme/campaigns",
        "branch": BRANCH,
        "base": "main",
        "commit": history[0]["sha"],
        "number": pull["number"],
        "url": pull["html_url"],
    }
    assert all(path.startswith("/api/v3/") for _, path in double.calls)  # GitHub Enterprise base path kept
    assert "test-token" not in json.dumps(effect.model_dump())
    assert double.problems == []


def test_open_review_twice_adopts_branch_commit_and_pull_request(double: GithubDouble, tmp_path: Path) -> None:
    backend, b = review(double), bundle(tmp_path)
    first = backend.open_review(b)
    made = writes(double)
    again = review(double).open_review(b)  # a retry, in a new task process
    assert again.ref == first.ref
    assert writes(double) == made  # nothing created, nothing recommitted
    assert len(double.pulls()) == 1 and len(double.commits(BRANCH)) == 2
    assert double.problems == []


def test_a_retry_after_the_commit_adopts_the_branch_and_opens_the_pull_request(double: GithubDouble, tmp_path: Path) -> None:
    b = bundle(tmp_path)
    double.fail_next("POST", r".*/pulls", 502, {"message": "Server Error"})
    with pytest.raises(ServiceError) as failed:
        review(double).open_review(b)
    assert failed.value.retryable and failed.value.status == 502
    assert double.branches() == [BRANCH, "main"] and double.pulls() == []
    effect = review(double).open_review(b)
    assert len(double.commits(BRANCH)) == 2 and double.count("POST", r".*/git/commits") == 1
    assert [p["number"] for p in double.open_pulls()] == [effect.ref["number"]]
    assert double.problems == []


def test_a_changed_bundle_adds_one_commit_with_only_the_changed_file(double: GithubDouble, tmp_path: Path) -> None:
    backend = review(double)
    backend.open_review(bundle(tmp_path))
    blobs = double.count("POST", r".*/git/blobs")
    effect = backend.open_review(bundle(tmp_path, markdown="# Spring launch\n\nEmail: Ship even faster.\n"))
    assert double.count("POST", r".*/git/blobs") == blobs + 1  # the README only; the images are unchanged
    history = double.commits(BRANCH)
    assert len(history) == 3 and effect.ref["commit"] == history[0]["sha"]
    assert double.files(BRANCH)["review/spring-launch-3f2a9c1b0d4e/README.md"].endswith(b"even faster.\n")
    assert len(double.pulls()) == 1
    assert double.problems == []


# --- review: undo ------------------------------------------------------------------------------------------------
def test_reopening_after_an_undo_opens_a_new_pull_request(double: GithubDouble, tmp_path: Path) -> None:
    backend, b = review(double), bundle(tmp_path)
    backend.undo(backend.open_review(b))
    effect = backend.open_review(b)  # the closed one is not adopted: a review must be open
    assert effect.ref["number"] == 2 and [p["number"] for p in double.open_pulls()] == [2]
    assert double.problems == []


def test_undo_refuses_a_branch_that_is_not_a_review_branch(double: GithubDouble, tmp_path: Path) -> None:
    backend = review(double)
    planned = backend.plan(bundle(tmp_path))
    with pytest.raises(ValueError, match="not a review branch"):
        backend.undo(planned.model_copy(update={"ref": {**planned.ref, "branch": "main"}}))
    assert double.branches() == ["main"] and double.calls == []
    assert double.problems == []


# --- review: polling for the approval gate ----------------------------------------------------------------------
def test_polling_uses_conditional_requests_and_sees_reviews_and_merges(double: GithubDouble, tmp_path: Path) -> None:
    backend = review(double)
    effect = backend.open_review(bundle(tmp_path))
    start = double.rate_remaining
    first = backend.poll_reviews(effect.ref, None)
    assert (first.not_modified, first.pull_state, first.reviews) == (False, "open", [])
    etag = first.etag
    for _ in range(10):  # nothing changes: every answer is a 304
        poll = backend.poll_reviews(effect.ref, etag)
        assert poll.not_modified and poll.pull_state == "open" and poll.reviews == []
        etag = poll.etag
    assert start - double.rate_remaining == 2  # two full answers (pull request, reviews), then 304s only
    assert poll.rate_remaining == double.rate_remaining
    assert double.count("GET", r".*/pulls/1") == 11 and double.count("GET", r".*/pulls/1/reviews") == 11

    double.add_review(1, "dana", "CHANGES_REQUESTED", "Make the subject shorter")
    double.add_review(1, "admin", "APPROVED")
    changed = backend.poll_reviews(effect.ref, etag)
    assert not changed.not_modified and changed.pull_state == "open"
    assert [(r.user, r.state, r.body) for r in changed.reviews] == [
        ("dana", "CHANGES_REQUESTED", "Make the subject shorter"),
        ("admin", "APPROVED", ""),
    ]
    assert all(r.submitted_at for r in changed.reviews)

    double.merge_pull(1)
    merged = backend.poll_reviews(effect.ref, changed.etag)
    assert (merged.not_modified, merged.pull_state, len(merged.reviews)) == (False, "merged", 2)
    assert backend.poll_reviews(effect.ref, merged.etag).not_modified
    assert double.problems == []


def test_a_state_change_alone_still_returns_the_reviews(double: GithubDouble, tmp_path: Path) -> None:
    backend = review(double)
    effect = backend.open_review(bundle(tmp_path))
    double.add_review(1, "dana", "APPROVED")
    seen = backend.poll_reviews(effect.ref, None)
    double.close_pull(1)
    poll = backend.poll_reviews(effect.ref, seen.etag)
    assert (poll.not_modified, poll.pull_state, [r.user for r in poll.reviews]) == (False, "closed", ["dana"])
    assert isinstance(ReviewPoll.model_validate(poll.model_dump()), ReviewPoll)
    assert double.problems == []


def test_polling_reads_every_page_of_reviews_and_from_a_planned_ref(double: GithubDouble, tmp_path: Path) -> None:
    backend, b = review(double), bundle(tmp_path)
    backend.open_review(b)
    for i in range(101):
        double.add_review(1, f"user{i}", "COMMENTED")
    poll = backend.poll_reviews(backend.plan(b).ref, None)  # no number: found by the branch
    assert len(poll.reviews) == 101 and poll.reviews[-1].user == "user100"
    again = backend.poll_reviews(backend.plan(b).ref, poll.etag)
    assert not again.not_modified and len(again.reviews) == 101  # several pages: never trusted as unchanged
    assert double.problems == []


# --- blog ----------------------------------------------------------------------------------------------------------
def test_publish_commits_the_post_once_through_the_git_data_api(double: GithubDouble) -> None:
    backend = blog(double)
    effect = backend.publish(POST)
    assert double.files("main")[POST.path] == POST.markdown.encode()
    head = double.commits("main")[0]
    assert head["message"] == f"Publish {POST.path} ({POST.key})\n\n{POST.title}"  # the subject a person reads, as with git
    assert (effect.kind, effect.key) == ("github_file", POST.key)
    assert effect.ref == {
        "repository": "acme/campaigns",
        "branch": "main",
        "path": POST.path,
        "blob_sha": git_blob_sha(POST.markdown.encode()),
        "commit": head["sha"],
        "url": effect.ref["url"],
    }
    assert effect.ref["url"].endswith(POST.path)

    one_commit = [("POST", "/git/blobs"), ("POST", "/git/trees"), ("POST", "/git/commits"), ("PATCH", "/git/refs/heads/main")]
    assert [(m, p.removeprefix("/api/v3/repos/acme/campaigns")) for m, p in writes(double)] == one_commit  # git data API
    again = blog(double).publish(POST)  # a retry adopts the file
    assert len(writes(double)) == len(one_commit) and again.ref["blob_sha"] == effect.ref["blob_sha"]
    assert double.problems == []  # undo (twice, from the plan): tests/backends/test_contract.py


def test_blog_plan_computes_the_blob_sha_without_io() -> None:
    planned = GithubBlog("campaign_blog", github_conn(f"http://127.0.0.1:{closed_port()}", branch="site")).plan(POST)
    data = POST.markdown.encode()
    assert planned.ref == {
        "repository": "acme/campaigns",
        "branch": "site",
        "path": POST.path,
        "blob_sha": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
    }
    assert blob_sha(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's id of the empty blob


def test_blog_never_overwrites_or_deletes_someone_elses_file(double: GithubDouble) -> None:
    double.commit_file("main", POST.path, b"an older post by a person\n")
    with pytest.raises(ServiceError) as refused:
        blog(double).publish(POST)
    assert not refused.value.retryable and POST.path in str(refused.value) and "not ours" in str(refused.value)
    assert double.files("main")[POST.path] == b"an older post by a person\n"
    assert writes(double) == []

    double.commit_file("main", POST.path, None)
    effect = blog(double).publish(POST)
    double.commit_file("main", POST.path, b"edited by the editor\n")  # changed after we published: not ours any more
    assert blog(double).undo(effect) is False
    assert double.files("main")[POST.path] == b"edited by the editor\n"
    assert double.problems == []


def test_blog_branch_setting_and_a_root_api_base(tmp_path: Path) -> None:
    with GithubDouble(prefix="") as double:  # github.com-style base: no path
        double.refs["site"] = double.refs["main"]
        effect = blog(double, branch="site").publish(POST)
        assert effect.ref["branch"] == "site" and POST.path in double.files("site") and POST.path not in double.files("main")
        assert double.count("GET", r"/repos/acme/campaigns") == 0  # the branch is configured: no default-branch lookup
        assert blog(double, branch="site").undo(effect) is True
        assert double.problems == []


def test_blog_ref_update_race_is_resolved_by_reading_again(double: GithubDouble) -> None:
    # The branch moved between our read and our ref update: GitHub answers 422 "Update is not a fast forward".
    double.fail_next("PATCH", r".*/git/refs/heads/main", 422, {"message": "Update is not a fast forward"})
    double.commit_file("main", "unrelated.md", b"x")
    effect = blog(double).publish(POST)  # first update refused, read again, committed again on the head
    assert double.count("PATCH", r".*/git/refs/heads/main") == 2 and effect.ref["commit"] == double.commits("main")[0]["sha"]
    assert [c["message"].split("\n")[0] for c in double.commits("main")] == [
        f"Publish {POST.path} ({POST.key})",
        "Edit by someone else",
        "Initial commit",
    ]
    assert double.problems == []


# --- errors ----------------------------------------------------------------------------------------------------------
def test_bad_credentials_fail_fast_without_leaking_the_token(double: GithubDouble, tmp_path: Path) -> None:
    backend = GithubReview("campaign_review", github_conn(double.url, password="wrong-secret-token"))
    with pytest.raises(ServiceError) as failed:
        backend.open_review(bundle(tmp_path))
    error = failed.value
    assert (error.status, error.retryable) == (401, False)
    assert "Bad credentials" in str(error) and "campaign_review" in str(error) and "wrong-secret-token" not in str(error)
    assert double.problems == []


def test_unknown_repository_is_a_404_that_fails_fast(double: GithubDouble) -> None:
    with pytest.raises(ServiceError) as failed:
        blog(double, repository="acme/nope").publish(POST)
    assert (failed.value.status, failed.value.retryable) == (404, False) and "Not Found" in str(failed.value)
    assert double.problems == []


def test_validation_failed_fails_fast_with_githubs_details(double: GithubDouble, tmp_path: Path) -> None:
    double.fail_next(
        "POST",
        r".*/pulls",
        422,
        {
            "message": "Validation Failed",
            "errors": [{"resource": "PullRequest", "code": "custom", "message": "No commits between main and campaign-review/x"}],
        },
    )
    with pytest.raises(ServiceError) as failed:
        review(double).open_review(bundle(tmp_path))
    assert (failed.value.status, failed.value.retryable) == (422, False)
    assert "Validation Failed" in str(failed.value) and "No commits between" in str(failed.value)
    assert double.problems == []


def test_secondary_rate_limit_403_is_retryable_with_retry_after(double: GithubDouble) -> None:
    message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    double.fail_next("GET", r".*/contents/.*", 403, {"message": message}, {"Retry-After": "30"})
    with pytest.raises(ServiceError) as failed:
        blog(double, branch="main").publish(POST)
    assert (failed.value.retryable, failed.value.retry_after, failed.value.status) == (True, 30, 403)
    assert double.count("GET", r".*/contents/.*") == 1  # GithubRetry would have slept 30 s and asked again
    assert double.problems == []


def test_secondary_rate_limit_without_header_waits_a_minute(double: GithubDouble) -> None:
    double.fail_next("GET", r".*/contents/.*", 403, {"message": "You have exceeded a secondary rate limit."})
    with pytest.raises(ServiceError) as failed:
        blog(double, branch="main").publish(POST)
    assert (failed.value.retryable, failed.value.retry_after) == (True, 60)
    assert double.problems == []


def test_primary_rate_limit_is_retryable_until_the_reset(double: GithubDouble) -> None:
    double.exhaust_rate_limit(reset_in=120)
    with pytest.raises(ServiceError) as failed:
        blog(double, branch="main").publish(POST)
    error = failed.value
    assert error.retryable and error.status == 403 and "rate limit exceeded" in str(error)
    assert error.retry_after is not None and 100 < error.retry_after <= 121
    assert len(double.calls) == 1  # no sleeping until the reset inside the task
    assert double.problems == []


def test_the_client_neither_retries_nor_throttles(double: GithubDouble) -> None:
    settings = GithubApi("campaign_review", github_conn(double.url)).client().requester.kwargs
    assert (settings["retry"], settings["seconds_between_requests"], settings["seconds_between_writes"]) == (None, None, None)
    assert settings["base_url"] == double.url and settings["api_version"] == "2022-11-28" and settings["timeout"] == 30


# --- configuration and the factory ----------------------------------------------------------------------------------
def test_connection_settings_are_checked_without_io() -> None:
    with pytest.raises(ConnectionConfigError, match="'repository'"):
        GithubReview("c", Connection(conn_id="c", conn_type="github", host="https://ghe.example.com/api/v3", password="t"))
    with pytest.raises(ConnectionConfigError, match="password"):
        GithubBlog("c", Connection(conn_id="c", conn_type="github", extra=json.dumps({"repository": "a/b"})))
    with pytest.raises(ConnectionConfigError, match="API base URL"):
        GithubBlog("c", github_conn("ghe.example.com/api/v3"))
    with pytest.raises(ConnectionConfigError, match="base_branch"):
        GithubReview("c", github_conn("https://api.github.com", base_branch="bad..name"))


def test_backend_for_builds_the_github_backends(double: GithubDouble, tmp_path: Path) -> None:
    conn = github_conn(double.url, base_branch="main")
    backend = connections.backend_for("review", "campaign_review", conn)
    assert isinstance(backend, GithubReview)
    assert isinstance(connections.backend_for("blog", "campaign_blog", conn), GithubBlog)
    effect = backend.open_review(bundle(tmp_path))
    assert effect.ref["base"] == "main" and double.count("GET", r"/api/v3/repos/acme/campaigns") == 0
    assert double.problems == []


def test_the_double_refuses_what_the_docs_do_not_allow(double: GithubDouble) -> None:
    # The double must catch a malformed call even if our code would swallow the answer.
    answer = requests.get(f"{double.url}/repos/acme/campaigns", headers={"Authorization": "Bearer test-token"}, timeout=5)
    assert answer.status_code == 415 and double.problems and "Accept" in double.problems[-1]
    headers = {"Authorization": "token test-token", "Accept": "application/vnd.github+json"}
    answer = requests.post(
        f"{double.url}/repos/acme/campaigns/git/refs",
        json={"ref": "campaign-review/x", "sha": "0" * 40},
        headers=headers,
        timeout=5,
    )
    assert answer.status_code == 422 and "fully qualified" in double.problems[-1]
    answer = requests.get(f"{double.url}/repos/acme/campaigns", headers={**headers, "If-None-Match": '"nothing"'}, timeout=5)
    etag = answer.headers["ETag"]
    again = requests.get(f"{double.url}/repos/acme/campaigns", headers={**headers, "If-None-Match": etag}, timeout=5)
    assert (answer.status_code, again.status_code) == (200, 304)
    assert int(again.headers["x-ratelimit-remaining"]) == int(answer.headers["x-ratelimit-remaining"])
    assert len(double.problems) == 2
    double.problems.clear()
