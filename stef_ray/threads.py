"""How many threads the numeric libraries may use: one per process by default, sized to the work.

numpy's OpenBLAS and the OpenMP of torch and scikit-learn's trees each start one thread per core, and
their threads busy-wait at every barrier. The work here is many small solves (per-hour ridges on a few
thousand rows, a small net), which a second thread does not speed up: on 2 cores one `stef-ray train` of
vic-elec took 16 s with one thread each against 25 s with the libraries' defaults, and 47 s against
93-124 s beside another such job (docs/benchmarks.md, "A busy machine"). Parallelism comes from Ray
instead (a trial, a fleet task or a Serve replica per CPU), where it scales.

``STEF_RAY_THREADS=N`` gives OpenMP and BLAS N threads each; ``off`` leaves the libraries' own defaults;
an ``OMP_NUM_THREADS`` or ``OPENBLAS_NUM_THREADS`` the user set wins over either.
"""

from __future__ import annotations

import os

from stef_ray.exceptions import ConfigError

THREADS_ENV = "STEF_RAY_THREADS"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def requested_threads(environ: dict | None = None) -> int | None:
    """``STEF_RAY_THREADS`` as a count: 1 when unset or ``auto``, None for ``off``."""
    environ = os.environ if environ is None else environ
    raw = environ.get(THREADS_ENV, "auto").strip().lower()
    if raw == "off":
        return None
    if raw in ("", "auto"):
        return 1
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"{THREADS_ENV}={raw!r} is not a thread count: set a whole number of 1 or more, "
                          "'auto' (one thread per process) or 'off' (the libraries' own defaults)")
    return threads


def configure_threads(environ: dict | None = None) -> int | None:
    """Before the numeric libraries load (they read these once): OpenMP and BLAS to the requested count.
    Variables the user set stay as they are; processes this one starts (a local Ray's workers) inherit
    them. Returns the count set (None with ``off``)."""
    environ = os.environ if environ is None else environ
    threads = requested_threads(environ)
    if threads is None:
        return None
    for name in THREAD_VARIABLES:
        environ.setdefault(name, str(threads))
    return threads


def limit_threads(threads: int) -> None:
    """Size the pools of libraries already loaded (a Ray Tune trial, a fleet task: one process, many
    jobs): torch's intra-op pool, OpenMP and BLAS to ``threads``."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
