"""Figures of kit.plots draw the numbers they are given, in the order given."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from kit import plots


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bar_heights(fig, container: int = 0) -> list:
    return [b.get_height() for b in fig.axes[0].containers[container]]


def xlabels(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_xticklabels()]


def test_label_counts_draws_grades_in_the_tables_order():
    counts = pd.DataFrame({"grade": [1, 2, 10], "images": [5, 0, 3], "share": [0.625, 0.0, 0.375]})
    fig = plots.label_counts(counts)
    assert xlabels(fig) == ["1", "2", "10"] and bar_heights(fig) == [5, 0, 3]
    assert fig.axes[0].get_title() == "images per grade"


def test_labels_per_image_and_group_sizes_draw_their_counts():
    fig = plots.labels_per_image(pd.DataFrame({"labels": [0, 1, 2], "images": [2, 0, 3]}))
    assert xlabels(fig) == ["0", "1", "2"] and bar_heights(fig) == [2, 0, 3]
    sizes = pd.DataFrame({"images": [1, 2], "groups": [7, 4], "with_positive": [1, 3]})
    fig = plots.group_sizes(sizes)
    assert bar_heights(fig, 0) == [7, 4] and bar_heights(fig, 1) == [1, 3]  # all groups, those with a positive
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["all groups", "with a positive"]
    assert len(plots.group_sizes(sizes.drop(columns="with_positive")).axes[0].containers) == 1


def test_cooccurrence_and_confusion_heatmaps_hold_the_counts():
    table = pd.DataFrame([[3, 2], [2, 4]], index=["a", "b"], columns=["a", "b"])
    fig = plots.cooccurrence(table)
    assert fig.axes[0].images[0].get_array().tolist() == [[3, 2], [2, 4]] and xlabels(fig) == ["a", "b"]
    y, pred = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0])
    fig = plots.predicted_confusion(y, pred, ["0", "1", "2"], "grades")
    assert fig.axes[0].images[0].get_array().tolist() == confusion_matrix(y, pred).tolist()
    fig = plots.confusion(y, np.eye(3)[pred], ["0", "1", "2"])  # the argmax of probabilities
    assert fig.axes[0].images[0].get_array().tolist() == confusion_matrix(y, pred).tolist()


def test_roc_draws_sklearns_curve_of_the_positive_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    p1 = np.clip(0.3 * y + rng.random(100) * 0.7, 0, 1)
    fig = plots.roc(y, np.c_[1 - p1, p1], ["benign", "malignant"])
    fpr, tpr, _ = roc_curve(y, p1)
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_xdata(), fpr) and np.allclose(line.get_ydata(), tpr)
    assert line.get_label() == f"AUC {roc_auc_score(y, p1):.4f}"
