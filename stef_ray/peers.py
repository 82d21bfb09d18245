"""Peer models from optional libraries (the 'peers' extra). Filled in by the accuracy work; the registry
maps a backtest model name to a callable(train, frame, positions, horizon) -> MW forecasts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

PEERS: dict[str, Callable] = {}


def available_peers(names: Sequence[str]) -> dict[str, Callable]:
    return {name: PEERS[name] for name in names if name in PEERS}
