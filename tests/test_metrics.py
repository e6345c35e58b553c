"""memf.core.metrics: the paper's five metrics equal scikit-learn's; bad inputs are refused."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn import metrics as skm

from memf.core.metrics import METRICS, regression_metrics

Y_TRUE = np.array([3.0, 4.5, 5.2, 6.8, 2.1, 5.5])
Y_PRED = np.array([3.3, 4.1, 5.0, 6.0, 2.9, 5.4])


def test_metrics_equal_scikit_learn():
    got = regression_metrics(Y_TRUE, Y_PRED)
    assert list(got) == list(METRICS)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(Y_TRUE, Y_PRED), abs=0)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(Y_TRUE, Y_PRED), abs=0)
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(Y_TRUE, Y_PRED), abs=0)
    assert got["r2"] == pytest.approx(skm.r2_score(Y_TRUE, Y_PRED), abs=0)
    assert got["evs"] == pytest.approx(skm.explained_variance_score(Y_TRUE, Y_PRED), abs=0)
    assert got["spearman"] == pytest.approx(spearmanr(Y_TRUE, Y_PRED).statistic, abs=0)


def test_spearman_of_a_constant_prediction_is_zero():
    assert regression_metrics(Y_TRUE, np.full_like(Y_TRUE, 4.0))["spearman"] == 0.0


def test_metrics_by_hand_values():
    got = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert got["mae"] == pytest.approx(1 / 3)
    assert got["mse"] == pytest.approx(1 / 3)
    assert got["mape"] == pytest.approx((1 / 3) / 3)
    assert got["r2"] == pytest.approx(1 - (1 / 1) / 2)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        (np.zeros(3), np.zeros(4), "shape"),
        (np.zeros(1), np.zeros(1), "at least 2"),
        (np.array([1.0, np.nan]), np.array([1.0, 2.0]), "non-finite"),
    ],
)
def test_metrics_refuse_bad_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        regression_metrics(y_true, y_pred)
