"""Operations around a trained model: the weekly retraining schedule (Ray jobs) and the accuracy monitor
that reads stored forecasts and actuals back and alerts (and asks for an early retrain) when MAPE drifts."""
