"""How forecasts are judged: the rolling-origin backtest, the naive baselines and peer models it runs
beside the hybrid, the metrics, and the plots. Plain numpy/pandas (a peer's own package where it has one)."""
