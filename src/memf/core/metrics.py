"""The paper's five regression metrics (section 4.3) on log(sales), computed by scikit-learn, and Spearman's rank
correlation (SciPy), the rank metric of the SMP video-popularity challenges: whether a model orders streams right."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import (
    explained_variance_score,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    r2_score,
)

#: Metric keys in the paper's column order (Tables 7-10), then Spearman's rho.
METRICS: tuple[str, ...] = ("mae", "mse", "mape", "r2", "evs", "spearman")
#: Metrics where larger is better; the others are errors.
HIGHER_IS_BETTER: frozenset[str] = frozenset({"r2", "evs", "spearman"})
#: Display names as the paper prints them.
METRIC_LABELS: dict[str, str] = {"mae": "MAE", "mse": "MSE", "mape": "MAPE", "r2": "R2_score", "evs": "EVS",
                                 "spearman": "Spearman"}


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman's rank correlation; 0 when either side is constant (a constant prediction orders nothing)."""
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    return float(spearmanr(y_true, y_pred).statistic)


_FUNCTIONS = {
    "mae": mean_absolute_error,
    "mse": mean_squared_error,
    "mape": mean_absolute_percentage_error,
    "r2": r2_score,
    "evs": explained_variance_score,
    "spearman": spearman,
}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, MSE, MAPE (a fraction, as scikit-learn and the paper's tables), R^2, EVS and Spearman's rho of ``y_pred``
    against ``y_true``.

    Raises:
        ValueError: the arrays differ in shape, are empty, or hold non-finite values.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"regression_metrics: y_true {y_true.shape} and y_pred {y_pred.shape}, expected equal 1-d shapes")
    if len(y_true) < 2:
        raise ValueError(f"regression_metrics: {len(y_true)} values, expected at least 2")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("regression_metrics: non-finite values in y_true or y_pred")
    return {name: float(fn(y_true, y_pred)) for name, fn in _FUNCTIONS.items()}
