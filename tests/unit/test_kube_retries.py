"""kube.py's answer to throttling and conflicts, as a table: which answers are retried, after how long,
and when a policy status write gives up instead of overwriting. The calls are stand-ins raising the
transport's own ApiError (an API server does not answer 429 or 409 on demand; the cluster tier gets
them from an injecting proxy: tests/cluster/test_api_faults.py)."""

from __future__ import annotations

import socket

import pytest

from kubetune import kube
from kubetune.kube import ApiClient, ApiError, KubeError, retry_wait

pytestmark = pytest.mark.unit


def answer(status: int, retry_after: str | None = None) -> ApiError:
    return ApiError(status, "injected", {"Retry-After": retry_after} if retry_after is not None else {})


WAITS = [
    ("429-with-retry-after", 429, "3", 0, 3.0),
    ("429-without-retry-after-backs-off", 429, None, 2, 4.0),
    ("429-retry-after-capped", 429, "600", 0, kube.MAX_WAIT),
    ("503-with-retry-after", 503, "1", 0, 1.0),
    ("500-without-retry-after-is-not-retried", 500, None, 0, None),
    ("409-is-not-a-throttle", 409, "1", 0, None),
    ("403-is-final", 403, None, 0, None),
    ("429-after-the-last-attempt", 429, "1", kube.MAX_ATTEMPTS - 1, None),
]


@pytest.mark.parametrize("status,after,attempt,wait", [w[1:] for w in WAITS], ids=[w[0] for w in WAITS])
def test_retry_wait(status, after, attempt, wait):
    assert retry_wait(status, {"Retry-After": after} if after else {}, attempt) == wait


class Flaky:
    """Fails with the given answers, then returns "ok"; counts its calls."""

    def __init__(self, *answers: ApiError):
        self.answers, self.calls = list(answers), 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.answers:
            raise self.answers.pop(0)
        return "ok"


def test_throttled_call_waits_as_told_then_succeeds():
    waits = []
    call = Flaky(answer(429, "2"), answer(429, "1"))
    assert kube._call("patch Deployment shop/web", call, sleep=waits.append) == "ok"
    assert call.calls == 3 and waits == [2.0, 1.0]


def test_throttled_until_the_last_attempt_names_the_call_and_the_status():
    call = Flaky(*[answer(429, "1")] * kube.MAX_ATTEMPTS)
    with pytest.raises(KubeError) as raised:
        kube._call("patch Deployment shop/web", call, sleep=lambda s: None)
    assert raised.value.status == 429 and str(raised.value) == "patch Deployment shop/web: injected"
    assert call.calls == kube.MAX_ATTEMPTS


def test_a_conflict_is_retried_only_while_the_check_says_nothing_else_was_recorded():
    checks = iter([True, False])
    call = Flaky(answer(409), answer(409))
    with pytest.raises(KubeError, match="changed by another writer since it was read, not overwritten") as raised:
        kube._call("patch status", call, on_conflict=lambda: next(checks), sleep=lambda s: None)
    assert raised.value.status == 409 and call.calls == 2


def test_a_conflict_without_a_check_is_final():
    # A Lease update carries its resourceVersion: its 409 means another candidate won, never retry.
    call = Flaky(answer(409))
    with pytest.raises(KubeError) as raised:
        kube._call("update Lease", call, sleep=lambda s: None)
    assert raised.value.status == 409 and call.calls == 1


class StatusAPI:
    """The two calls a policy status write makes: the merge patch of /status (answering the queued
    errors first) and the re-read of the policy after a 409, which returns `recorded`."""

    PATH = "/apis/kubetune.io/v1alpha1/namespaces/shop/performancepolicies/web"

    def __init__(self, recorded: dict, *answers: ApiError):
        self.recorded, self.answers, self.patched = recorded, list(answers), []

    def call(self, method, path, body=None, content_type=None, **_):
        if (method, path) == ("GET", self.PATH):
            return self.recorded
        assert (method, path, content_type) == ("PATCH", self.PATH + "/status", kube.MERGE)
        if self.answers:
            raise self.answers.pop(0)
        self.patched.append(body)


def status_writer(api: StatusAPI) -> kube.Kube:
    k = kube.Kube(api)  # the stand-in is the transport seam
    k.sleep = lambda s: None
    return k


INTENT = {"lastAction": {"time": "2026-11-29T20:00:00Z", "action": "IncreaseResources"}}
CONFLICTS = [
    ("nothing-recorded-in-between", {}, None, True),
    ("our-own-intent-already-there", {"status": INTENT}, None, True),
    ("the-action-we-decided-on", {"status": {"lastAction": {"time": "2026-11-29T19:00:00Z"}}}, "2026-11-29T19:00:00Z", True),
    ("another-writers-action", {"status": {"lastAction": {"time": "2026-11-29T19:59:00Z"}}}, None, False),
]


@pytest.mark.parametrize("recorded,read,written", [c[1:] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS])
def test_a_status_conflict_rereads_and_never_overwrites_another_action(recorded, read, written):
    api = StatusAPI(recorded, answer(409))
    writer = status_writer(api)
    if written:
        writer.patch_policy_status("shop", "web", INTENT, read)
        assert api.patched == [{"status": INTENT}]
    else:
        with pytest.raises(KubeError, match="not overwritten"):
            writer.patch_policy_status("shop", "web", INTENT, read)
        assert api.patched == []


def test_an_api_server_that_never_answers_is_named_with_the_timeout():
    # A listening socket that never answers: what an API server whose etcd is gone looks like to a write.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(KubeError) as raised:
            kube.send(ApiClient(url), "read Lease kubetune/op", "GET", "/apis/coordination.k8s.io/v1/leases",
                      timeout=(1, 0.2))
    assert str(raised.value) == f"read Lease kubetune/op: the API server {url} gave no answer within 0.2 s"
    assert raised.value.status == 0


def test_an_api_server_that_is_not_there_is_named():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: the connection is refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(KubeError) as raised:
            kube.send(ApiClient(url), "list pods", "GET", "/api/v1/pods")
    assert str(raised.value) == f"list pods: cannot connect to the API server {url}"
