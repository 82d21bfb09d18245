"""Research harness, stage 2: neural-residual variants on the arrays cached by neural_cache.py.

For each refit it trains a variant on the windows of the last ``train_days`` before T (the validation blocks and
their surroundings left out), then scores on the validation blocks (against the out-of-sample ridges) and on the
refit's test origins (against the served ridges): residual alone, net alone, and blends.

    python benchmarks/research/neural_dev.py --dataset pjm-east-2016 --variant mlp
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn


def load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def window_features(c: dict, series: np.ndarray, origins: np.ndarray, lookback: int, horizon: int,
                    base: np.ndarray | None) -> np.ndarray:
    back = series[origins[:, None] + np.arange(-lookback, 0), 0]
    parts = [back]
    if c["level_history"]:
        parts.append(series[origins[:, None] + np.arange(-lookback, 0), 1])
    parts.append(series[origins[:, None] + np.arange(horizon), 1:].reshape(len(origins), -1))
    hours = c["hour"][origins]
    parts.append(np.eye(24, dtype=np.float32)[hours])
    doy = c["doy"][origins]
    parts.append(np.column_stack([np.sin(doy), np.cos(doy)]))
    if base is not None:
        parts.append(base)
    return np.hstack(parts).astype(np.float32)


class Net(nn.Module):
    def __init__(self, width: int, horizon: int, hidden: int, layers: int, dropout: float, skip: bool):
        super().__init__()
        blocks, d = [], width
        for _ in range(layers):
            blocks += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
            d = hidden
        self.body = nn.Sequential(*blocks, nn.Linear(d, horizon))
        self.skip = nn.Linear(width, horizon) if skip else None
        for layer in (self.body[-1], self.skip):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        out = self.body(x)
        return out + self.skip(x) if self.skip is not None else out


def train_net(x, y, xv, yv, args, seed: int, weight=None):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.as_tensor((x - mean) / std)
    yt = torch.as_tensor(y)
    xvt = torch.as_tensor((xv - mean) / std)
    net = Net(x.shape[1], y.shape[1], args.hidden, args.layers, args.dropout, args.skip)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.wd)
    steps = args.epochs * int(np.ceil(len(x) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps) if args.onecycle else None
    curve = []
    for _ in range(args.epochs):
        net.train()
        order = rng.permutation(len(x))
        for s in range(0, len(order), args.batch):
            idx = order[s : s + args.batch]
            opt.zero_grad()
            loss = (net(xt[idx]) - yt[idx]).abs()
            if weight is not None:
                loss = loss * torch.as_tensor(weight[idx])[:, None]
            loss.mean().backward()
            opt.step()
            if sched:
                sched.step()
        net.eval()
        with torch.no_grad():
            pv = net(xvt).numpy()
        curve.append(float(np.abs(pv - yv).mean()))
    return net, mean, std, curve


def train_lstm(series, train, val, y, yv, args, seed):
    """The shipped ResidualNet (LSTM encoder + MLP head + highway) on the same windows and targets."""
    from stef_ray.models.residual_lstm import ResidualNet
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = torch.as_tensor(series)
    net = ResidualNet(series.shape[1], 168, 24, args.hidden, args.layers, args.dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.wd)
    def gather(o):
        o = torch.as_tensor(o)
        return data[o[:, None] + torch.arange(-168, 0)], data[o[:, None] + torch.arange(24)][:, :, 1:]
    yt, curve = torch.as_tensor(y), []
    for _ in range(args.epochs):
        net.train()
        order = rng.permutation(len(train))
        for s in range(0, len(order), args.batch):
            idx = order[s : s + args.batch]
            h, f = gather(train[idx])
            opt.zero_grad()
            (net(h, f) - yt[idx]).abs().mean().backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        curve.append(float(np.abs(lstm_predict(net, gather, val) - yv).mean()))
    return net, gather, curve


def lstm_predict(net, gather, origins):
    net.eval()
    with torch.no_grad():
        return np.concatenate([net(*gather(origins[i:i + 4096])).numpy() for i in range(0, len(origins), 4096)])


def predict(net, mean, std, x):
    with torch.no_grad():
        net.eval()
        return net(torch.as_tensor((x - mean) / std)).numpy()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", required=True)
    p.add_argument("--cache", default="/tmp/neural_cache")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--train-days", type=int, default=730)
    p.add_argument("--skip", action="store_true")
    p.add_argument("--onecycle", action="store_true")
    p.add_argument("--level-history", action="store_true")
    p.add_argument("--stack", action="store_true", help="the net also reads the ridge forecast (OOS on val)")
    p.add_argument("--insample", action="store_true", help="stack on the served (in-sample) ridge instead")
    p.add_argument("--w00", type=float, default=1.0, help="weight of 00:00 origins in the loss")
    p.add_argument("--arch", default="mlp", choices=["mlp", "lstm"])
    p.add_argument("--only", type=int, default=None, help="one refit")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted((Path(args.cache) / args.dataset).glob("refit_*.npz"))
    if args.only is not None:
        files = [files[args.only]]
    rows, daily = [], []
    lookback, horizon = 168, 24
    for f in files:
        t0 = time.perf_counter()
        z = load(f)
        series = z["series"]
        ts = pd.to_datetime(z["timestamps"], utc=True)
        # local hour of each row from the hour channels (as the ridges read it)
        names = list(z["channel_names"])
        hs, hc = series[:, names.index("hour_sin")], series[:, names.index("hour_cos")]
        hour = (np.rint(np.arctan2(hs, hc) * 24 / (2 * np.pi)).astype(int)) % 24
        doy = 2 * np.pi * (ts.dayofyear.to_numpy() - 1) / 365.25
        c = {"hour": hour, "doy": doy.astype(np.float32), "level_history": args.level_history}
        n_train = int(z["n_train"])
        origins = z["origins"]
        val_o = z["val_origins"]
        # Training windows: the last train_days, none sharing a row with a validation window.
        train = origins[origins >= n_train - horizon - 24 * args.train_days]
        train = train[np.isin(train, z["period"])]
        bad = np.zeros(len(train), dtype=bool)
        for b in np.unique(z["val_block"]):
            vb = val_o[z["val_block"] == b]
            bad |= (train > vb.min() - lookback - horizon) & (train < vb.max() + lookback + horizon)
        train = train[~bad]
        y = series[train[:, None] + np.arange(horizon), 0]
        yv = series[val_o[:, None] + np.arange(horizon), 0]
        base_tr = base_val = base_test = None
        rm, rs = float(z["residual_mean"]), float(z["residual_std"])
        period = z["period"]
        if args.stack:
            at = np.searchsorted(period, train)
            assert (period[at] == train).all()
            base_tr = z["period_oos"][at].astype(np.float32)
            base_val = z["val_oos"].astype(np.float32)
            base_test = ((z["ridge_test"] - rm) / rs).astype(np.float32)
            if args.insample:
                base_tr = z["period_served"][at].astype(np.float32)
        x = window_features(c, series, train, lookback, horizon, base_tr)
        xv = window_features(c, series, val_o, lookback, horizon, base_val)
        pos = z["positions"]
        s_test = series.copy()
        xt = window_features(c, s_test, pos, lookback, horizon, base_test)
        preds_v, preds_t, curves = [], [], []
        off_tr = base_tr if args.stack else 0.0
        off_v = base_val if args.stack else 0.0
        off_t = base_test if args.stack else 0.0
        weight = np.where(hour[train] == 0, args.w00, 1.0).astype(np.float32) if args.w00 != 1.0 else None
        for seed in range(args.seeds):
            if args.arch == "lstm":
                net, gather, curve = train_lstm(series, train, val_o, y - off_tr, yv - off_v, args, seed)
                preds_v.append(lstm_predict(net, gather, val_o) + off_v)
                preds_t.append(lstm_predict(net, gather, pos) + off_t)
                curves.append(curve)
                continue
            net, m, s, curve = train_net(x, y - off_tr, xv, yv - off_v, args, seed, weight)
            preds_v.append(predict(net, m, s, xv) + off_v)
            preds_t.append(predict(net, m, s, xt) + off_t)
            curves.append(curve)
        pv, pt = np.mean(preds_v, 0), np.mean(preds_t, 0)
        oos = z["val_oos"]
        # validation blocks: scaled L1 (all hours) and at 00:00 origins
        midnight = hour[val_o] == 0
        def l1(pred, rows=slice(None), yv=yv):
            return float(np.abs(pred[rows] - yv[rows]).mean())
        vres = {"val_ridge": l1(oos), "val_net": l1(pv)}
        for w in (0.25, 0.5, 0.75):
            vres[f"val_blend{w}"] = l1((1 - w) * oos + w * pv)
        vres["val_ridge_00"] = l1(oos, midnight)
        vres["val_blend0.5_00"] = l1(0.5 * oos + 0.5 * pv, midnight)
        # test block: MW MAPE of median forecasts
        base = z["trend_test"] + z["season_test"]
        actual = z["actual_test"]
        ridge_log = z["ridge_test"]
        net_log = pt * rs + rm
        def mape(res_log, base=base, actual=actual):
            return np.abs(np.exp(base + res_log) / actual - 1).mean(axis=1) * 100  # per day
        out = {"ridge": mape(ridge_log), "net": mape(net_log), "served": np.abs(z["served_test"] / actual - 1).mean(axis=1) * 100}
        for w in (0.25, 0.5, 0.75):
            out[f"blend{w}"] = mape((1 - w) * ridge_log + w * net_log)
        for k, v in out.items():
            for d, val in enumerate(v):
                daily.append({"refit": f.stem, "day": d, "model": k, "mape": val})
        row = {"refit": f.stem, "n_train": len(train), **vres, **{k: float(v.mean()) for k, v in out.items()},
               "curve": [round(v, 4) for v in np.mean(curves, 0)], "sec": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    d = pd.DataFrame(daily).pivot_table(index=["refit", "day"], columns="model", values="mape")
    print("\nMAPE over all days:")
    print(d.mean().round(4).to_string())
    for k in d.columns:
        if k == "ridge":
            continue
        diff = d[k] - d["ridge"]
        print(f"  {k:>10} - ridge: {diff.mean():+.4f} ± {diff.std() / np.sqrt(len(diff)):.4f} (rel {diff.mean() / d['ridge'].mean() * 100:+.2f} %)")
    frame = pd.DataFrame(rows)
    print(frame[[c for c in frame.columns if c.startswith("val_")]].mean().round(4).to_string())
    out_dir = Path("/tmp/dev/results")
    out_dir.mkdir(parents=True, exist_ok=True)
    d.to_csv(out_dir / f"{args.dataset}_{args.tag or 'run'}.csv")


if __name__ == "__main__":
    main()
