"""LSTM on the residuals: the last ``lookback`` hours of scaled residuals and features in, the next
``horizon`` residuals out at once (direct multi-horizon). Torch lives here and nowhere else in the core.

The training data is one array ``series`` of shape (hours, channels): channel 0 is the scaled residual,
the others are scaled exogenous and calendar inputs. A window is just an origin index ``o``: history rows
``o-lookback .. o-1`` (all channels), future rows ``o .. o+horizon-1`` (features only, they are known),
targets the residuals of the future rows. Windows are gathered per batch, so memory stays at one copy.
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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did; handed to every callback (the CLI's table, Ray Tune's reporter)."""

    epoch: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    improved: bool
    seconds: float


EpochCallback = Callable[[EpochReport, "ResidualLSTM"], None]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from stef_ray.exceptions import ConfigError

        raise ConfigError("device 'cuda' requested but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)


class ResidualNet(nn.Module):
    """LSTM encoder over the history, an MLP head over [last state, known future features], plus a
    linear skip from the history residuals (an autoregressive 'highway') that learns persistence fast."""

    def __init__(self, n_channels: int, lookback: int, horizon: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.horizon = horizon
        self.lstm = nn.LSTM(
            n_channels, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        future_width = horizon * (n_channels - 1)
        self.head = nn.Sequential(
            nn.Linear(hidden + future_width, hidden * 2),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden * 2, horizon),
        )
        self.highway = nn.Linear(lookback, horizon)
        # Start from a zero output: an untrained net adds nothing to the baseline, and early stopping
        # (which scores this starting point too) keeps it that way unless training really helps.
        for layer in (self.head[-1], self.highway):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, history: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(history)
        context = torch.cat([hidden[-1], future.flatten(1)], dim=1)
        return self.head(context) + self.highway(history[:, :, 0])


def valid_origins(valid_rows: np.ndarray, lookback: int, horizon: int, stride: int = 1) -> np.ndarray:
    """Origins whose whole window (history and future) lies on rows without NaN."""
    n = len(valid_rows)
    bad = np.concatenate([[0], np.cumsum(~valid_rows)])
    origins = np.arange(lookback, n - horizon + 1)
    clean = (bad[origins + horizon] - bad[origins - lookback]) == 0
    origins = origins[clean]
    return origins[(origins - lookback) % stride == 0] if stride > 1 else origins


class ResidualLSTM:
    """Fit/predict on an aligned ``series`` array; ``predict`` returns scaled residuals (len(origins), H)."""

    def __init__(self, config: ResidualConfig, n_channels: int) -> None:
        self.config = config
        self.n_channels = n_channels
        self.device = resolve_device(config.device)
        self.net = self._new_net()
        self.best_val_loss = float("inf")
        self.epochs_run = 0
        self.stopped_early = False
        self.kept = True  # False: it did not beat adding nothing on validation, and outputs zero
        self.history: list[EpochReport] = []

    def _new_net(self) -> ResidualNet:
        c = self.config
        return ResidualNet(self.n_channels, c.lookback_hours, c.horizon_hours, c.hidden_size, c.num_layers, c.dropout)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def _gather(
        self, series: torch.Tensor, origins: torch.Tensor, baseline: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """History windows, future features and targets (minus the baseline's prediction, if any)."""
        c = self.config
        back = origins[:, None] + torch.arange(-c.lookback_hours, 0, device=series.device)
        ahead = origins[:, None] + torch.arange(0, c.horizon_hours, device=series.device)
        future_rows = series[ahead]
        target = future_rows[:, :, 0]
        if baseline is not None:
            target = target - baseline[origins]
        return series[back], future_rows[:, :, 1:], target

    def _loss(self) -> nn.Module:
        return {"l1": nn.L1Loss(), "mse": nn.MSELoss(), "huber": nn.HuberLoss(delta=1.0)}[self.config.loss]

    def fit(
        self,
        series: np.ndarray,
        train_origins: np.ndarray,
        val_origins: np.ndarray,
        callbacks: Sequence[EpochCallback] = (),
        init_state: dict | None = None,
        baseline: np.ndarray | None = None,
    ) -> ResidualLSTM:
        """Adam(W) with early stopping on the validation loss; the best epoch's weights are kept.

        ``init_state`` warm-starts from earlier weights (rolling refits in backtests). ``baseline``
        (rows, horizon) is another model's prediction per origin row; the net learns what it misses.
        """
        c = self.config
        torch.manual_seed(c.seed)
        generator = np.random.default_rng(c.seed)
        self.net = self._new_net()
        if init_state is not None:
            self.net.load_state_dict(init_state)
        self.net.to(self.device)
        data = torch.as_tensor(series, dtype=torch.float32, device=self.device)
        val = torch.as_tensor(val_origins, dtype=torch.long, device=self.device)
        base = None if baseline is None else torch.as_tensor(baseline, dtype=torch.float32, device=self.device)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
        loss_fn = self._loss()
        best_state, self.best_val_loss, stale = None, float("inf"), 0
        if len(val):
            # Epoch 0: the starting point (zero output, or the warm-start weights) is a candidate too.
            self.best_val_loss = self._evaluate(data, val, loss_fn, base)
            best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.history, self.stopped_early = [], False
        for epoch in range(1, c.max_epochs + 1):
            started = time.perf_counter()
            self.net.train()
            order = generator.permutation(train_origins)
            total, count = 0.0, 0
            for start in range(0, len(order), c.batch_size):
                batch = torch.as_tensor(order[start : start + c.batch_size], dtype=torch.long, device=self.device)
                history, future, target = self._gather(data, batch, base)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(self.net(history, future), target)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                optimizer.step()
                total += float(loss.detach()) * len(batch)
                count += len(batch)
            val_loss = self._evaluate(data, val, loss_fn, base) if len(val) else total / max(count, 1)
            improved = val_loss < self.best_val_loss - 1e-6
            if improved:
                self.best_val_loss, stale = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                stale += 1
            report = EpochReport(epoch, total / max(count, 1), val_loss, self.best_val_loss, improved,
                                 time.perf_counter() - started)
            self.history.append(report)
            self.epochs_run = epoch
            for callback in callbacks:
                callback(report, self)
            if stale >= c.patience:
                self.stopped_early = True
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        if len(val):
            self._keep_if_better(data, val, loss_fn, base)
        return self

    def keep_if_better(self, series: np.ndarray, val_origins: np.ndarray, baseline: np.ndarray | None = None) -> bool:
        """Keep the current weights only if their validation loss (``best_val_loss``) beats adding nothing
        by ``min_gain``; else switch to a zero output. For weights trained elsewhere (a Ray Tune trial)."""
        data = torch.as_tensor(series, dtype=torch.float32, device=self.device)
        val = torch.as_tensor(val_origins, dtype=torch.long, device=self.device)
        base = None if baseline is None else torch.as_tensor(baseline, dtype=torch.float32, device=self.device)
        return self._keep_if_better(data, val, self._loss(), base)

    def _keep_if_better(self, data: torch.Tensor, val: torch.Tensor, loss_fn: nn.Module,
                        base: torch.Tensor | None) -> bool:
        # Adding nothing is always a candidate. Early stopping scores the starting point, but a warm start
        # (rolling refits) does not start there, and on new weeks the old weights can do worse than no LSTM
        # at all (vic-elec: 6 of 13 refits); a net that helps by less than `min_gain` is validation noise.
        zero = self._new_net().to(self.device)
        zero_loss = self._evaluate(data, val, loss_fn, base, net=zero)
        self.kept = self.best_val_loss < zero_loss * (1 - self.config.min_gain)
        if not self.kept:
            logger.info("LSTM residual dropped: validation loss %.4f against %.4f without it", self.best_val_loss, zero_loss)
            self.net, self.best_val_loss = zero, zero_loss
        return self.kept

    @torch.no_grad()
    def _evaluate(self, data: torch.Tensor, origins: torch.Tensor, loss_fn: nn.Module,
                  baseline: torch.Tensor | None = None, net: nn.Module | None = None) -> float:
        net = net or self.net
        net.eval()
        total = 0.0
        for start in range(0, len(origins), 4096):
            history, future, target = self._gather(data, origins[start : start + 4096], baseline)
            total += float(loss_fn(net(history, future), target)) * len(target)
        return total / len(origins)

    @torch.inference_mode()  # cheaper than no_grad per op; nothing here is ever trained on
    def predict(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        if self.net.training:  # eval() walks every module: a tenth of a forecast request's LSTM time
            self.net.eval()
        data = torch.as_tensor(series, dtype=torch.float32, device=self.device)
        out = []
        for start in range(0, len(origins), 4096):
            batch = torch.as_tensor(origins[start : start + 4096], dtype=torch.long, device=self.device)
            history, future, _ = self._gather(data, batch)
            out.append(self.net(history, future).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, self.config.horizon_hours))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> ResidualLSTM:
        self.net.load_state_dict(state)
        self.net.to(self.device)
        return self
