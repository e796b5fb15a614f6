import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here: fail fast instead of waiting on the network


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project root: relative data/, runs/, submissions/ resolve inside tmp_path."""
    for d in ("data", "runs", "submissions", "notebooks"):
        (tmp_path / d).mkdir()
    monkeypatch.setenv("KIT_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_comp(project):
    """A 150-image demo competition at 16 px with 3-fold folds.csv written."""
    from kit.competition import load_competition
    from kit.demo import build_demo
    from kit.folds import folds_path, make_folds, write_folds

    build_demo("data", "demo", size=16, n=150)
    comp = load_competition("demo")
    write_folds(make_folds(comp, n_folds=3), folds_path(comp))
    return load_competition("demo")


@pytest.fixture
def ordinal_comp(project):
    """The ordinal demo 'ord' (the digit's value as a grade: 10 grades, scored by QWK), 60 images at 16 px, 2 folds."""
    from kit.competition import load_competition
    from kit.demo import build_demo
    from kit.folds import folds_path, make_folds, write_folds

    build_demo("data", name="ord", n=60, size=16, task="ordinal")
    comp = load_competition("ord", metric="qwk")
    write_folds(make_folds(comp, 2), folds_path(comp))
    return comp


# the tests' tiny training: one epoch of timm's smallest test ResNet on the tiny competition's 16 px images
TINY = {"model": "test_resnet", "img_size": 16, "epochs": 1, "batch_size": 32}


@pytest.fixture
def fit_tiny(tiny_comp):
    """fit_tiny(exp="m", fold=0, **params) -> FoldResult: one fold of the tiny competition trained with TINY,
    params overriding it. Per test, not per session: once torch is imported a tiny fold trains in ~0.2 s here, so a
    session's fold copied into each test's project would save nothing, and its config.json would name the
    session's competition, not the test's."""
    from kit.config import TrainConfig
    from kit.train import fit_fold

    def fit(exp: str = "m", fold: int = 0, **params):
        return fit_fold(TrainConfig(exp=exp, fold=fold, **{**TINY, **params}))

    return fit


@pytest.fixture
def tiny_fold(fit_tiny):
    """Fold 0 of experiment 'm', trained with TINY and tta='auto': best.pt, history.csv, config.json and the OOF
    of every TTA preset, as fit_fold leaves them."""
    return fit_tiny("m", tta="auto")


@pytest.fixture
def interrupted_fit(monkeypatch):
    """interrupted_fit(cfg, epochs): fit_fold(cfg) stopped by a KeyboardInterrupt as epoch `epochs + 1` starts,
    what a Ctrl-C leaves for a resume."""
    import kit.train

    def run(cfg, epochs: int) -> None:
        real, calls = kit.train.train_one_epoch, []

        def dies(*a, **k):
            calls.append(1)
            if len(calls) == epochs + 1:
                raise KeyboardInterrupt
            return real(*a, **k)

        with monkeypatch.context() as m:
            m.setattr(kit.train, "train_one_epoch", dies)
            with pytest.raises(KeyboardInterrupt):
                kit.train.fit_fold(cfg)

    return run
