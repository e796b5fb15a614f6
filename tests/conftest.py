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
