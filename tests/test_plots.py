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


SPECIES = [f"Amanita muscaria var. long epithet number {i:02d}" for i in range(20)]  # they differ at the end


def test_twenty_long_class_names_lie_down_one_per_row_shortened_and_smaller():
    fig = plots.bars(SPECIES, np.arange(20) + 1, "images per label", "label")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 20 and labels[0] == plots.short(SPECIES[0]) and len(labels[0]) == plots.LABEL_CHARS
    assert len(set(labels)) == 20 and labels[7].endswith("number 07")  # shortened, still told apart
    assert [p.get_width() for p in ax.patches] == list(range(1, 21))  # horizontal bars, first on top
    assert ax.yaxis_inverted() and fig.get_size_inches()[1] >= 0.24 * 20
    few = plots.bars(["0", "1", "2"], [3, 4, 5], "images per label", "label").axes[0]
    assert [p.get_height() for p in few.patches] == [3, 4, 5]  # a few short ones stay upright
    plt.close("all")


def test_a_confusion_matrix_of_twenty_classes_grows_and_shrinks_its_labels():
    y = np.repeat(np.arange(20), 3)
    small = plots.predicted_confusion(y[:30] % 5, y[:30] % 5, SPECIES[:5], "5")
    big = plots.predicted_confusion(y, np.roll(y, 1), SPECIES, "20")
    assert big.get_size_inches()[0] > small.get_size_inches()[0] * 2
    ticks = big.axes[0].get_xticklabels()
    assert len(ticks) == 20 and ticks[0].get_fontsize() < small.axes[0].get_xticklabels()[0].get_fontsize()
    assert ticks[0].get_rotation() == 90 and all(len(t.get_text()) <= plots.LABEL_CHARS for t in ticks)
    plt.close("all")


def test_image_sizes_histograms_every_readable_image():
    stats = pd.DataFrame({"width": [640, 480, 100, np.nan], "height": [480, 640, 100, np.nan],
                          "error": ["", "", "", "cannot read"]})
    fig = plots.image_sizes(stats)
    short_side, aspect = fig.axes
    assert sum(p.get_height() for p in short_side.patches) == 3 and sum(p.get_height() for p in aspect.patches) == 3
    plt.close("all")
