"""A component replica that dies under a request: the ingress asks another once (a forecast is idempotent),
so a killed replica costs a retry, not a degraded or failed answer. The death is injected (a response that
raises Ray's ActorDiedError): killing a replica exactly while a millisecond-long call is in flight cannot be
timed for real in a test; benchmarks/serve_latency.py kills real replicas under load."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from ray.exceptions import ActorDiedError

from stef_ray.serving.ingress import ForecastIngress
from stef_ray.serving.residual_wait import ResidualWait

INGRESS = ForecastIngress.func_or_class


class Response:
    """What a DeploymentHandle call returns, reduced to what the ingress uses: awaitable, cancellable."""

    def __init__(self, outcome):
        self.outcome = outcome

    def __await__(self):
        async def settle():
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return self.outcome
        return settle().__await__()

    def cancel(self):
        pass


def residual_answer(first, then):
    asked = []

    def ask_again():
        asked.append(then)
        return Response(then)

    async def run():
        ingress = SimpleNamespace(_residual_wait=ResidualWait(5.0))
        started = asyncio.get_running_loop().time()
        return await INGRESS._residual_answer(ingress, Response(first), started, ask_again)

    return asyncio.run(run()), asked


def test_replica_retry__a_dead_residual_replica_is_asked_again_and_the_answer_is_not_degraded():
    (answer, reason), asked = residual_answer(ActorDiedError(), "the residual's answer")
    assert (answer, reason) == ("the residual's answer", None)
    assert len(asked) == 1


def test_replica_retry__a_second_death_answers_degraded_with_the_reason():
    (answer, reason), asked = residual_answer(ActorDiedError(), ActorDiedError())
    assert answer is None and reason == "ActorDiedError"
    assert len(asked) == 1


def test_replica_retry__other_errors_are_not_retried():
    (answer, reason), asked = residual_answer(ValueError("bad batch"), "never asked")
    assert answer is None and reason == "ValueError" and asked == []


def test_replica_retry__trend_and_seasonality_are_asked_again_after_a_death():
    calls = {"trend": 0}

    class Handle:
        def __init__(self, name, outcomes):
            self.name, self.outcomes = name, list(outcomes)
            self.predict = SimpleNamespace(remote=self.remote)

        def remote(self, key, batch):
            calls[self.name] = calls.get(self.name, 0) + 1
            return Response(self.outcomes.pop(0))

    ingress = SimpleNamespace(_trend=Handle("trend", [ActorDiedError(), "trend"]),
                              _seasonality=Handle("season", ["season", "season"]))
    got = asyncio.run(INGRESS._trend_and_season(ingress, "key", "batch"))
    assert list(got) == ["trend", "season"] and calls["trend"] == 2
