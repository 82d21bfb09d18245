"""Hot swap under load: re-deploying the config with a new model source in the ingress's user_config
reconfigures the replicas in place; no request fails and no answer mixes the two models."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from stef_ray.serving.app_args import AppArgs
from stef_ray.serving.service import ForecastService

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def busy_machine(jobs: int = 2):
    """Another CPU-heavy job on the machine: ``jobs`` processes multiplying matrices until stopped."""
    loop = "import numpy as np\na = np.random.rand(400, 400)\nwhile True:\n    a = a @ a / np.linalg.norm(a)"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    hogs = [subprocess.Popen([sys.executable, "-c", loop], env=env) for _ in range(jobs)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_hot_swap__no_failed_request_and_the_version_switches(served, bundles, make_body, busy):
    # busy: with another CPU-heavy job running, a swap must still answer every request 'ok' (the residual
    # waits longer on a machine that is slow for everyone, and the new model loads beside the old one).
    body = make_body()
    expected = {}
    for bundle in (bundles.first, bundles.second):
        service = ForecastService.from_source(str(bundle))
        expected[service.loaded.info.version] = service.forecast(service.parse(json.dumps(body)))["forecast"]
    first, second = list(expected)
    assert not np.allclose(expected[first], expected[second], rtol=1e-4)  # the swap is visible in the numbers

    answers: list[tuple[float, int, dict]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            response = served.post(body, timeout=30)
            answers.append((time.monotonic(), response.status_code,
                            response.json() if response.status_code == 200 else {"text": response.text}))

    # The shipped wait for the residual (the other tests shorten it): a request waits that long at least
    # before coming back degraded, also in the first second of a busy spell, before any slow answer has
    # told the ingress that the machine is busy (ResidualWait).
    floor = AppArgs.model_fields["residual_timeout_s"].default
    served.deploy(ForecastIngress={"user_config": {"model_source": str(bundles.first), "residual_timeout_s": floor}})
    ingress = {"model_source": str(bundles.second), "residual_timeout_s": floor}
    with busy_machine() if busy else contextlib.nullcontext(), ThreadPoolExecutor(6) as pool:
        workers = [pool.submit(client) for _ in range(6)]
        try:
            deadline = time.monotonic() + 60  # some answers on the first model (slow on a busy machine)
            while len(answers) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            swapped_at = time.monotonic()
            served.deploy(ForecastIngress={"user_config": ingress})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                a[2].get("model_version") == second for a in answers[-6:]
            ):
                time.sleep(0.1)
            time.sleep(1.0)
        finally:
            stop.set()
            for worker in workers:
                worker.result()
            served.deploy(ForecastIngress={"user_config": {"model_source": str(bundles.first),
                                                           "residual_timeout_s": 1.0}})

    failed = [a for a in answers if a[1] != 200]
    assert not failed, failed[:3]
    versions = [a[2]["model_version"] for a in answers]
    assert versions[0] == first, set(versions)
    assert versions[-1] == second, set(versions)
    assert all(a[2]["quality"] == "ok" for a in answers)
    for _, _, answer in answers:  # each answer is entirely one model's
        np.testing.assert_allclose(answer["forecast"], expected[answer["model_version"]], rtol=1e-6)
    before = sum(a[0] < swapped_at for a in answers)
    assert before > 0
    assert len(answers) - before > 0
