import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from kit import KitError
from kit.config import TrainConfig
from kit.metrics import lookup, metric_value, score


def probs(n=300, k=5, seed=0):
    """Labels and softmax rows that lean toward them: a usable but imperfect model."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = 1.5 * np.eye(k)[y] + rng.normal(size=(n, k))
    e = np.exp(logits)
    return y, e / e.sum(1, keepdims=True)


def multilabel(n=200, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.4).astype(int)
    return y, np.clip(0.3 * y + rng.random((n, k)) * 0.7, 0, 1)


@pytest.mark.parametrize("seed", range(3))
def test_qwk_is_sklearns_quadratic_cohen_kappa_on_the_argmax(seed):
    y, p = probs(seed=seed)
    expected = skm.cohen_kappa_score(y, p.argmax(1), weights="quadratic")
    assert metric_value("qwk", y, p) == pytest.approx(expected, abs=1e-12)
    assert metric_value("qwk", y, p) != pytest.approx(skm.cohen_kappa_score(y, p.argmax(1)), abs=1e-6)  # not unweighted


def test_qwk_keeps_the_grade_distance_when_a_grade_is_never_seen():
    """Grades 0, 1, 3 used of 0..3: 0 vs 3 is three steps apart, not two (sklearn's default labels)."""
    y = np.array([0, 1, 3, 3, 0, 1])
    p = np.eye(4)[[0, 3, 3, 1, 1, 0]]
    expected = skm.cohen_kappa_score(y, p.argmax(1), labels=np.arange(4), weights="quadratic")
    assert metric_value("qwk", y, p) == pytest.approx(expected)
    assert expected != pytest.approx(skm.cohen_kappa_score(y, p.argmax(1), weights="quadratic"))


def test_roc_auc_is_sklearns_for_binary_and_for_macro_one_vs_rest():
    y, p = probs(k=2)
    assert metric_value("roc_auc", y, p) == pytest.approx(skm.roc_auc_score(y, p[:, 1]), abs=1e-12)
    y, p = probs(k=4, seed=1)
    expected = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert metric_value("roc_auc", y, p) == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="weighted"), abs=1e-6)


def test_roc_auc_depends_only_on_the_order_of_each_column():
    y, p = probs(k=3)
    ranks = np.argsort(np.argsort(p, axis=0), axis=0) / len(p)  # rows no longer sum to one
    assert metric_value("roc_auc", y, ranks) == pytest.approx(metric_value("roc_auc", y, p))


def test_mean_col_auc_skips_columns_with_a_single_class():
    y = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    p = np.array([[.9, .4, .1], [.1, .3, .2], [.8, .2, .3], [.2, .1, .4]])
    # column 0 is perfect (1.0), column 1 orders 2 of 4 pairs right (0.5), column 2 is all positive
    assert metric_value("mean_col_auc", y, p) == pytest.approx(0.75)


def test_mean_col_auc_without_any_two_class_column_says_so():
    with pytest.raises(KitError, match="single class"):
        metric_value("mean_col_auc", np.ones((3, 2), int), np.full((3, 2), 0.5))


@pytest.mark.parametrize("beta", [0.5, 1, 2])
def test_f_beta_is_sklearns_macro_on_the_argmax(beta):
    y, p = probs(seed=2)
    expected = skm.fbeta_score(y, p.argmax(1), beta=beta, average="macro")
    assert metric_value(f"f_beta:{beta}", y, p) == pytest.approx(expected, abs=1e-12)


def test_f_beta_on_a_multilabel_matrix_is_sklearns_sample_average_at_one_half():
    y, p = multilabel()
    expected = skm.fbeta_score(y, (p > 0.5).astype(int), beta=2, average="samples", zero_division=0)
    assert metric_value("f_beta:2", y, p) == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(skm.fbeta_score(y, (p > 0.5).astype(int), beta=2, average="macro", zero_division=0),
                                     abs=1e-6)


def test_map_at_k_single_label_is_one_over_the_rank_inside_the_top_k():
    y = np.array([0, 1, 2])
    p = np.array([[.7, .2, .1, .0],    # true class ranked 1st: 1
                  [.5, .3, .1, .1],    # 2nd: 1/2
                  [.4, .3, .2, .1]])   # 3rd: 1/3 at k=3, outside the top 2
    assert metric_value("map@3", y, p) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert metric_value("map@2", y, p) == pytest.approx((1 + 1 / 2) / 3)


def test_map_at_k_multilabel_is_average_precision_over_min_of_true_labels_and_k():
    y = np.array([[1, 0, 1, 0],    # top 3 = 0, 1, 2: hits at ranks 1 and 3 -> (1 + 2/3) / 2
                  [0, 0, 0, 1],    # its only label ranked 4th: 0 at k=3
                  [1, 1, 1, 1]])   # every one of the top 3 hits, over min(4, 3) -> 1
    p = np.array([[.9, .8, .7, .1], [.9, .8, .7, .1], [.4, .3, .2, .1]])
    assert metric_value("map@3", y, p) == pytest.approx(((1 + 2 / 3) / 2 + 0 + 1) / 3)


def test_user_metric_from_a_module_on_sys_path(tmp_path, monkeypatch):
    (tmp_path / "kit_test_usermetric.py").write_text(
        "import numpy as np\n"
        "def hit_rate(y, p):\n    return float(np.mean(p.argmax(1) == y))\n"
        "def miss_rate(y, p):\n    return 1 - hit_rate(y, p)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    y, p = probs()
    assert metric_value("kit_test_usermetric:hit_rate", y, p) == pytest.approx(metric_value("accuracy", y, p))
    assert lookup("kit_test_usermetric:hit_rate").greater_is_better
    assert lookup("kit_test_usermetric:hit_rate:max").greater_is_better
    assert not lookup("kit_test_usermetric:miss_rate:min").greater_is_better
    assert score("kit_test_usermetric:miss_rate:min", y, p) == pytest.approx(metric_value("accuracy", y, p) - 1)
    assert not lookup("kit_test_usermetric:hit_rate").ranking
    with pytest.raises(KitError, match=r"kit_test_usermetric:nope.*no function 'nope'"):
        lookup("kit_test_usermetric:nope")


def test_user_metric_from_the_project_root_while_running_elsewhere(project, monkeypatch):
    """Notebooks run in notebooks/: the project root is searched, and not left on sys.path."""
    (project / "kit_test_rootmetric.py").write_text("def one(y, p):\n    return 1.0\n")
    monkeypatch.chdir(project / "notebooks")
    monkeypatch.delitem(sys.modules, "kit_test_rootmetric", raising=False)
    assert metric_value("kit_test_rootmetric:one", np.array([0]), np.array([[1.0, 0.0]])) == 1.0
    assert str(project) not in sys.path


@pytest.mark.parametrize("name,message", [
    ("kit_no_such_module:f", r"no module 'kit_no_such_module' importable"),
    ("kit_no_such_module:f:max", r"no module 'kit_no_such_module' importable"),
    ("mymetrics:kappa:up", r"not module:function\[:max\|:min\]"),
    ("f_beta:x", r"'x' is not a positive float"),
    ("f_beta:-1", r"not a positive float"),
    ("map@0", r"'0' is not a positive int"),
    ("map@k", r"not a positive int"),
    ("bogus", r"unknown metric 'bogus'.*'qwk'.*f_beta:<beta>.*map@<k>.*module:function"),
])
def test_bad_names_fail_with_a_kit_error_naming_them(name, message):
    with pytest.raises(KitError, match=message):
        lookup(name)


def test_a_user_module_that_itself_fails_to_import_shows_its_own_error(tmp_path, monkeypatch):
    (tmp_path / "kit_test_brokenmetric.py").write_text("import kit_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="kit_no_such_dependency"):
        lookup("kit_test_brokenmetric:f")


@pytest.mark.parametrize("name,greater,ranking", [
    ("qwk", True, False), ("roc_auc", True, True), ("mean_col_auc", True, True),
    ("f_beta:2", True, False), ("map@5", True, False),
    # unchanged
    ("accuracy", True, False), ("log_loss", False, False), ("roc_auc_ovr", True, True), ("neg_log_loss", False, False),
])
def test_flags(name, greater, ranking):
    m = lookup(name)
    assert (m.greater_is_better, m.ranking) == (greater, ranking)


@pytest.mark.parametrize("name", ["accuracy", "macro_f1", "qwk", "roc_auc"])  # log_loss scores both (BCE)
def test_single_label_metrics_refuse_a_multilabel_matrix(name):
    y, p = multilabel()
    with pytest.raises(KitError, match=rf"'{name}' scores single-label targets but y is multi-label"):
        metric_value(name, y, p)


def test_mean_col_auc_refuses_class_indices():
    y, p = probs()
    with pytest.raises(KitError, match="'mean_col_auc' scores multi-label targets but y is single-label"):
        metric_value("mean_col_auc", y, p)


def test_targets_that_do_not_fit_the_probabilities_are_refused():
    y, p = multilabel()
    with pytest.raises(KitError, match=r"targets of shape \(200, 3\) do not match probabilities of shape \(200, 4\)"):
        metric_value("f_beta:2", y[:, :3], p)
    with pytest.raises(KitError, match="do not match"):
        metric_value("accuracy", np.zeros(5, int), np.full((6, 2), 0.5))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")  # f1_samples: rows without labels
def test_sklearn_scorers_take_a_multilabel_matrix_or_say_why_not():
    y, p = multilabel()
    assert metric_value("average_precision", y, p) == pytest.approx(skm.average_precision_score(y, p))
    assert metric_value("f1_samples", y, p) == pytest.approx(skm.f1_score(y, (p > 0.5).astype(int), average="samples",
                                                                                 zero_division=0))
    with pytest.raises(KitError, match=r"'matthews_corrcoef' \(sklearn\) on a multi-label target matrix"):
        metric_value("matthews_corrcoef", y, p)


@pytest.mark.parametrize("name", ["qwk", "roc_auc", "mean_col_auc", "f_beta:2", "map@5", "roc_auc_ovr"])
def test_config_accepts_the_new_names(name):
    assert TrainConfig(metric=name).metric == name


def test_config_refuses_a_missing_user_metric_naming_the_parameter():
    with pytest.raises(KitError, match=r"parameter metric='kit_no_such_module:f'.*no module 'kit_no_such_module'"):
        TrainConfig(metric="kit_no_such_module:f")
