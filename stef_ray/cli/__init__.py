"""The ``stef-ray`` command line. Each subcommand lives in its own module with a ``register`` function;
heavy imports (torch, ray, mlflow) happen inside the subcommand so ``--help`` starts fast."""

from stef_ray.cli.main import main

__all__ = ["main"]
