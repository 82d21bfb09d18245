"""The neural residual: the last ``lookback`` hours of scaled residuals and features in, the next ``horizon``
residuals out at once (direct multi-horizon), learning what the ridges and trees beneath it get wrong. Torch
lives here and nowhere else in the core.

The data is one array ``series`` of shape (hours, channels): channel 0 is the scaled residual, the others are
scaled exogenous and calendar inputs. A window is just an origin index ``o``: history rows ``o-lookback .. o-1``
(all channels), future rows ``o .. o+horizon-1`` (features only, they are known), targets the residuals of the
future rows less the ``baseline`` (the linear layers' out-of-sample forecast of that window). Windows are
gathered per batch, so memory stays at one copy.

Two architectures (``ResidualConfig.architecture``), both with the origin's local hour as a one-hot input (the
ridges beneath are fitted per origin hour; a net that does not know it cannot tell a 00:00 forecast's lead 15,
the afternoon, from a 12:00 one's, the night), both starting from a zero output:
- ``lstm``: an LSTM encoder over the history, an MLP head over [last state, known future inputs, origin hour],
  plus a linear skip from the history residuals;
- ``mlp``: one MLP over [history residuals, known future inputs, origin hour], plus the same skip.
``ensemble`` members from consecutive seeds are averaged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stef_ray.config import ResidualConfig
from stef_ray.models.residual_linear import HOURS_PER_DAY, origin_hours
from stef_ray.spec import ForecastSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """What one epoch of one ensemble member did; handed to every callback (the CLI's table)."""

    member: int
    epoch: int
    train_loss: float
    val_loss: float  # on the early-stopping days
    best_val_loss: float
    improved: bool
    seconds: float


EpochCallback = Callable[[EpochReport, "NeuralResidual"], None]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from stef_ray.exceptions import ConfigError

        raise ConfigError("device 'cuda' requested but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)


def _zero_output(*layers: nn.Linear) -> None:
    # Start from a zero output: an untrained net adds nothing to the ridges and trees, and early stopping
    # (which scores this starting point too) keeps it that way unless training really helps.
    for layer in layers:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


class ResidualNet(nn.Module):
    """LSTM encoder over the history, an MLP head over [last state, known future features, origin hour], plus
    a linear skip from the history residuals (an autoregressive 'highway') that learns persistence fast.
    ``origin_hour=False`` builds the head of bundles before format 7, which had no origin-hour input."""

    def __init__(self, n_channels: int, lookback: int, horizon: int, hidden: int, layers: int, dropout: float,
                 origin_hour: bool = True):
        super().__init__()
        self.horizon = horizon
        self.lstm = nn.LSTM(
            n_channels, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        width = hidden + horizon * (n_channels - 1) + (HOURS_PER_DAY if origin_hour else 0)
        self.head = nn.Sequential(nn.Linear(width, hidden * 2), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden * 2, horizon))
        self.highway = nn.Linear(lookback, horizon)
        _zero_output(self.head[-1], self.highway)

    def forward(self, history: torch.Tensor, future: torch.Tensor, hour: torch.Tensor | None) -> torch.Tensor:
        _, (state, _) = self.lstm(history)
        parts = [state[-1], future.flatten(1)] + ([hour] if hour is not None else [])
        return self.head(torch.cat(parts, dim=1)) + self.highway(history[:, :, 0])


class ResidualMLP(nn.Module):
    """An MLP over [history residuals, known future features, origin hour] with ``layers`` hidden layers of
    ``hidden`` units, plus the same linear skip from the history residuals."""

    def __init__(self, n_channels: int, lookback: int, horizon: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        width = lookback + horizon * (n_channels - 1) + HOURS_PER_DAY
        body: list[nn.Module] = []
        for _ in range(layers):
            body += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*body, nn.Linear(width, horizon))
        self.highway = nn.Linear(lookback, horizon)
        _zero_output(self.body[-1], self.highway)

    def forward(self, history: torch.Tensor, future: torch.Tensor, hour: torch.Tensor | None) -> torch.Tensor:
        back = history[:, :, 0]
        return self.body(torch.cat([back, future.flatten(1), hour], dim=1)) + self.highway(back)


def valid_origins(valid_rows: np.ndarray, lookback: int, horizon: int, stride: int = 1) -> np.ndarray:
    """Origins whose whole window (history and future) lies on rows without NaN."""
    n = len(valid_rows)
    bad = np.concatenate([[0], np.cumsum(~valid_rows)])
    origins = np.arange(lookback, n - horizon + 1)
    clean = (bad[origins + horizon] - bad[origins - lookback]) == 0
    origins = origins[clean]
    return origins[(origins - lookback) % stride == 0] if stride > 1 else origins


class NeuralResidual:
    """Fit/predict on an aligned ``series`` array; ``predict`` returns scaled residuals (len(origins), H),
    the mean of the ensemble members.

    Args:
        hour_channels: the columns of ``series`` holding sin and cos of the local hour (the origin hour input).
        origin_hour: False only for LSTM weights of bundles before format 7 (no origin-hour input).
    """

    def __init__(self, config: ResidualConfig, spec: ForecastSpec, n_channels: int, hour_channels: tuple[int, int],
                 origin_hour: bool = True) -> None:
        if config.architecture == "mlp" and not origin_hour:
            raise ValueError("the MLP residual always reads the origin hour")
        self.config = config
        self.spec = spec
        self.n_channels = n_channels
        self.hour_channels = hour_channels
        self.origin_hour = origin_hour
        self.device = resolve_device(config.device)
        self.nets = [self._new_net() for _ in range(config.ensemble)]
        self.best_val_loss = float("inf")  # mean over members, on the early-stopping days
        self.epochs_run = 0  # summed over members
        self.stopped_early = False  # every member stopped before max_epochs
        self.history: list[EpochReport] = []

    def _new_net(self) -> nn.Module:
        c, spec = self.config, self.spec
        if c.architecture == "mlp":
            return ResidualMLP(self.n_channels, spec.lookback_hours, spec.horizon_hours, c.hidden_size, c.num_layers,
                               c.dropout)
        return ResidualNet(self.n_channels, spec.lookback_hours, spec.horizon_hours, c.hidden_size, c.num_layers,
                           c.dropout, self.origin_hour)

    @property
    def label(self) -> str:
        members = f" x{len(self.nets)}" if len(self.nets) > 1 else ""
        return f"{self.config.architecture.upper()}{members}"

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for net in self.nets for p in net.parameters())

    def _gather(self, series: torch.Tensor, hours: torch.Tensor, origins: torch.Tensor,
                baseline: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """History windows, future features, origin hour one-hot and targets (less the baseline, if any)."""
        spec = self.spec
        back = origins[:, None] + torch.arange(-spec.lookback_hours, 0, device=series.device)
        ahead = origins[:, None] + torch.arange(0, spec.horizon_hours, device=series.device)
        future_rows = series[ahead]
        target = future_rows[:, :, 0]
        if baseline is not None:
            target = target - baseline
        hour = nn.functional.one_hot(hours[origins], HOURS_PER_DAY).float() if self.origin_hour else None
        return series[back], future_rows[:, :, 1:], hour, target

    def _loss(self) -> nn.Module:
        return {"l1": nn.L1Loss(), "mse": nn.MSELoss(), "huber": nn.HuberLoss(delta=1.0)}[self.config.loss]

    def _tensors(self, series: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        hours = np.zeros(len(series), dtype=np.int64)
        rows = np.arange(len(series))
        finite = np.isfinite(series[:, list(self.hour_channels)]).all(axis=1)
        hours[finite] = origin_hours(series, rows[finite], self.hour_channels)
        data = torch.as_tensor(np.nan_to_num(series), dtype=torch.float32, device=self.device)
        return data, torch.as_tensor(hours, device=self.device)

    def fit(
        self,
        series: np.ndarray,
        train_origins: np.ndarray,
        stop_origins: np.ndarray,
        train_baseline: np.ndarray | None = None,
        stop_baseline: np.ndarray | None = None,
        callbacks: Sequence[EpochCallback] = (),
        init_state: dict | None = None,
    ) -> NeuralResidual:
        """AdamW with early stopping on ``stop_origins``; each member keeps its best epoch's weights (the
        starting point, a zero output, included). Without stopping windows every epoch runs.

        ``*_baseline`` (len(origins), horizon): the linear layers' out-of-sample forecast per window; the net
        learns what it misses. ``init_state`` warm-starts from earlier weights (the previous validation block's net)."""
        data, hours = self._tensors(series)
        train = torch.as_tensor(train_origins, dtype=torch.long, device=self.device)
        stop = torch.as_tensor(stop_origins, dtype=torch.long, device=self.device)
        base_train = None if train_baseline is None else torch.as_tensor(train_baseline, dtype=torch.float32,
                                                                         device=self.device)
        base_stop = None if stop_baseline is None else torch.as_tensor(stop_baseline, dtype=torch.float32,
                                                                       device=self.device)
        members = self._split_state(init_state) if init_state else [None] * len(self.nets)
        self.history, self.epochs_run, best, stopped = [], 0, [], []
        for m in range(len(self.nets)):
            net_best, net_stopped = self._fit_member(m, data, hours, train, stop, base_train, base_stop,
                                                     callbacks, members[m] if m < len(members) else None)
            best.append(net_best)
            stopped.append(net_stopped)
        self.best_val_loss = float(np.mean(best))
        self.stopped_early = all(stopped)
        return self

    def _fit_member(self, m, data, hours, train, stop, base_train, base_stop, callbacks, init) -> tuple[float, bool]:
        c = self.config
        torch.manual_seed(c.seed + m)
        generator = np.random.default_rng(c.seed + m)
        net = self._new_net()
        if init is not None:
            net.load_state_dict(init)
        net.to(self.device)
        self.nets[m] = net
        optimizer = torch.optim.AdamW(net.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
        loss_fn = self._loss()
        best_state, best_loss, stale = None, float("inf"), 0
        if len(stop):
            best_loss = self._evaluate(net, data, hours, stop, loss_fn, base_stop)
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        stopped = False
        for epoch in range(1, c.max_epochs + 1):
            started = time.perf_counter()
            net.train()
            order = torch.as_tensor(generator.permutation(len(train)), device=self.device)
            total, count = 0.0, 0
            for start in range(0, len(order), c.batch_size):
                rows = order[start : start + c.batch_size]
                base = None if base_train is None else base_train[rows]
                history, future, hour, target = self._gather(data, hours, train[rows], base)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(history, future, hour), target)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimizer.step()
                total += float(loss.detach()) * len(rows)
                count += len(rows)
            train_loss = total / max(count, 1)
            val_loss = self._evaluate(net, data, hours, stop, loss_fn, base_stop) if len(stop) else train_loss
            improved = val_loss < best_loss - 1e-6
            if improved or not len(stop):
                best_loss, stale = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
            report = EpochReport(m, epoch, train_loss, val_loss, best_loss, improved, time.perf_counter() - started)
            self.history.append(report)
            self.epochs_run += 1
            for callback in callbacks:
                callback(report, self)
            if stale >= c.patience:
                stopped = True
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        return best_loss, stopped

    @torch.no_grad()
    def _evaluate(self, net, data, hours, origins, loss_fn, baseline) -> float:
        net.eval()
        total = 0.0
        for start in range(0, len(origins), 4096):
            base = None if baseline is None else baseline[start : start + 4096]
            history, future, hour, target = self._gather(data, hours, origins[start : start + 4096], base)
            total += float(loss_fn(net(history, future, hour), target)) * len(target)
        return total / len(origins)

    @torch.inference_mode()  # cheaper than no_grad per op; nothing here is ever trained on
    def predict(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        if len(origins) == 0:
            return np.empty((0, self.spec.horizon_hours))
        for net in self.nets:
            if net.training:  # eval() walks every module: a tenth of a forecast request's net time
                net.eval()
        # Only the rows the windows read are converted (a request's frame, or a backtest's whole series).
        lo = max(int(np.min(origins)) - self.spec.lookback_hours, 0)
        hi = int(np.max(origins)) + self.spec.horizon_hours
        data, hours = self._tensors(np.asarray(series[lo:hi]))
        out = []
        for start in range(0, len(origins), 4096):
            batch = torch.as_tensor(np.asarray(origins[start : start + 4096]) - lo, dtype=torch.long,
                                    device=self.device)
            history, future, hour, _ = self._gather(data, hours, batch)
            out.append(torch.stack([net(history, future, hour) for net in self.nets]).mean(0).cpu().numpy())
        return np.concatenate(out)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every member's weights, keys prefixed by the member number ("0.lstm.weight_ih_l0", ...)."""
        return {f"{m}.{k}": v.detach().cpu() for m, net in enumerate(self.nets) for k, v in net.state_dict().items()}

    def to_parts(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Settings and arrays, as the ridges and trees give theirs (``from_parts`` rebuilds the net from them
        alone; the bundle keeps the settings in its manifest and the weights in torch's format)."""
        meta = {"residual": self.config.model_dump(mode="json"), "forecast": self.spec.model_dump(mode="json"),
                "n_channels": self.n_channels, "hour_channels": list(self.hour_channels),
                "origin_hour": self.origin_hour}
        return meta, {key: value.numpy() for key, value in self.state_dict().items()}

    @classmethod
    def from_parts(cls, meta: dict, arrays: dict) -> NeuralResidual:
        net = cls(ResidualConfig.model_validate(meta["residual"]), ForecastSpec.model_validate(meta["forecast"]),
                  int(meta["n_channels"]), tuple(meta["hour_channels"]), bool(meta["origin_hour"]))
        state = {key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}
        return net.load_state_dict(state)

    @staticmethod
    def _split_state(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        members: dict[int, dict] = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            members.setdefault(int(head), {})[rest] = value
        return [members[m] for m in sorted(members)]

    def load_state_dict(self, state: dict[str, torch.Tensor], members_prefixed: bool = True) -> NeuralResidual:
        """Load weights; ``members_prefixed=False`` reads one net's state dict (bundles before format 7)."""
        parts = self._split_state(state) if members_prefixed else [state]
        if len(parts) != len(self.nets):
            raise ValueError(f"{len(parts)} member(s) in the weights, {len(self.nets)} in the config")
        for net, part in zip(self.nets, parts, strict=True):
            net.load_state_dict(part)
            net.to(self.device)
        return self
