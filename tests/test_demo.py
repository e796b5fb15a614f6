import hashlib

import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.demo import build_demo, leaderboard_score


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_rgb_png_and_hides_test_labels(project):
    root = build_demo("data", n=100, size=16)
    first = digest(root)
    assert digest(build_demo("data", n=100, size=16)) == first
    from PIL import Image

    with Image.open(next((root / "train").iterdir())) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (16, 16))
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert set(sample["label"]) == {"0"}  # no labels in what the notebooks read
    solution = pd.read_csv(project / "data" / "_leaderboard" / "demo.csv", dtype=str)
    assert sorted(solution["image_id"]) == sorted(sample["image_id"]) and solution["label"].nunique() == 10
    assert not (root / "_leaderboard").exists()


def test_leaderboard_scores_a_submission(project):
    build_demo("data", n=100, size=16)
    solution = pd.read_csv(project / "data" / "_leaderboard" / "demo.csv", dtype={"image_id": str})
    perfect, wrong = project / "perfect.csv", project / "wrong.csv"
    solution.to_csv(perfect, index=False)
    solution.assign(label=(solution["label"] + 1) % 10).to_csv(wrong, index=False)
    assert leaderboard_score(perfect) == 1.0
    assert leaderboard_score(wrong) == 0.0
    half = solution.copy()
    half.loc[: len(half) // 2 - 1, "label"] = (half["label"] + 1) % 10
    half.to_csv(project / "half.csv", index=False)
    assert leaderboard_score(project / "half.csv") == pytest.approx(1 - (len(half) // 2) / len(half))
    solution.iloc[1:].to_csv(project / "short.csv", index=False)
    with pytest.raises(KitError, match=r"lacks 1 test id"):
        leaderboard_score(project / "short.csv")


@pytest.mark.parametrize("bad", ["cat", "3.5", "12", ""])
def test_leaderboard_names_a_label_that_is_not_a_class(project, bad):
    build_demo("data", n=100, size=16)
    solution = pd.read_csv(project / "data" / "_leaderboard" / "demo.csv", dtype=str)
    solution.loc[3, "label"] = bad
    solution.to_csv(project / "bad.csv", index=False)
    with pytest.raises(KitError, match=rf"bad.csv: column 'label' has 1 value\(s\) that are not a digit class 0..9, "
                                       rf"e\.g\. \['{bad}'\]"):
        leaderboard_score(project / "bad.csv")


def test_the_hard_demo_renders_each_digit_several_times_on_one_side_of_every_split(project):
    from PIL import Image

    from kit.competition import load_competition
    from kit.folds import make_folds

    root = build_demo("data", name="hard", n=120, renders=3)
    train = pd.read_csv(root / "train.csv", dtype=str)
    solution = pd.read_csv(project / "data" / "_leaderboard" / "hard.csv", dtype=str)
    assert list(train.columns) == ["image_id", "label", "group"] and len(train) == 96 * 3 and len(solution) == 24 * 3
    assert (train.groupby("group")["label"].nunique() == 1).all() and (train.groupby("group").size() == 3).all()
    images = [np.asarray(Image.open(root / "train" / f"{i}.png")) for i in train["image_id"][:6]]
    assert all(im.shape == (32, 32, 3) for im in images) and len({im.tobytes() for im in images}) == 6
    comp = load_competition("hard")
    assert comp.train["group"].nunique() == 96  # read as train.csv's group column
    folds = make_folds(comp, 4).merge(train, left_on="id", right_on="image_id")
    assert (folds.groupby("group")["fold"].nunique() == 1).all()  # a digit's renderings share one fold
    again = build_demo("data", name="hard", n=120, renders=3)
    assert pd.read_csv(again / "train.csv", dtype=str).equals(train)  # deterministic
    with pytest.raises(KitError, match="renders single digits"):
        build_demo("data", name="ml", n=60, renders=2, task="multilabel")


def test_test_digits_may_be_rendered_more_often_than_training_digits(project):
    """A larger leaderboard for inference only: 24 test digits x 5 renderings, 96 training digits x 2, every id
    unique and every test image its own."""
    from PIL import Image

    root = build_demo("data", name="big", n=120, renders=2, test_renders=5)
    train = pd.read_csv(root / "train.csv", dtype=str)
    solution = pd.read_csv(project / "data" / "_leaderboard" / "big.csv", dtype=str)
    assert (len(train), len(solution)) == (96 * 2, 24 * 5) and (train.groupby("group").size() == 2).all()
    assert len(set(train["image_id"]) | set(solution["image_id"])) == 96 * 2 + 24 * 5
    assert sorted(p.stem for p in (root / "test").iterdir()) == sorted(solution["image_id"])
    assert (solution["label"].value_counts() % 5 == 0).all()  # whole digits, five renderings each
    pixels = {np.asarray(Image.open(root / "test" / f"{i}.png")).tobytes() for i in solution["image_id"]}
    assert len(pixels) == 24 * 5


@pytest.mark.slow
def test_kit_demo_ends_with_each_experiment_with_and_without_tta_the_blends_and_the_pseudo_move(project, capsys):
    """`kit demo` on a slice of the hard demo, one epoch: the closing table's rows are each experiment without
    TTA and with its TTA, the blend, stacking, the best experiment retrained with pseudo-labels from the best of
    the two blends (by honest score) and stacking with it; each row's scores are those of the submission and
    blend.json it names (leaderboard re-graded here), and the last line names the row with the best honest score."""
    import re
    import shutil
    from pathlib import Path

    from kit.cli import main
    from kit.io import read_json

    for nb in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"):
        shutil.copy(nb, project / "notebooks")
    # a 1-epoch teacher is sure of nothing at 0.9; at 0.1 every test image of 10 classes is pseudo-labelled
    assert main(["demo", "--n", "150", "--n-folds", "2", "--epochs", "1", "--pseudo-threshold", "0.1"]) == 0
    out = capsys.readouterr().out
    n_test = len(pd.read_csv(project / "data" / "_leaderboard" / "demo.csv"))
    assert n_test == 30 * 4  # 30 test digits, rendered 4 times each (--test-renders)
    assert re.search(rf"pseudo-labels from demo(-stack)?\.csv: {n_test}, {n_test} test images at >= 0.1 ", out), out
    assert (project / "data" / "demo" / "train.csv").read_text().splitlines()[0].endswith("group")  # the hard demo
    table = pd.read_csv(project / "runs" / "demo" / "day.csv")
    assert out.endswith(f"\n\n{table.round(4).to_string(index=False)}\n\nbest by the honest score (the leaderboard "
                        f"is not for choosing): {table.loc[table['honest_accuracy'].idxmax(), 'row']}, "
                        f"honest_accuracy {table['honest_accuracy'].max():.4f}, leaderboard_accuracy "
                        f"{table.loc[table['honest_accuracy'].idxmax(), 'leaderboard_accuracy']:.4f}\n")
    assert table.columns.tolist() == ["row", "tta", "submission", "oof_accuracy", "honest_accuracy",
                                      "leaderboard_accuracy"]
    sub = project / "submissions"
    for r in table.itertuples():
        spec = read_json(sub / r.submission.replace(".csv", ".blend.json"))
        assert (r.oof_accuracy, r.honest_accuracy) == (spec["oof_score"], spec["honest_score"]), r
        assert r.leaderboard_accuracy == leaderboard_score(sub / r.submission), r
        assert r.tta == ", ".join(x["tta"] for x in spec["scores"])
    rows = table.set_index("submission")
    assert table["submission"].tolist()[:6] == ["demo-effnet-none.csv", "demo-effnet.csv", "demo-resnet-none.csv",
                                                "demo-resnet.csv", "demo.csv", "demo-stack.csv"]
    for e in ("demo-effnet", "demo-resnet"):
        none, chosen = rows.loc[f"{e}-none.csv"], rows.loc[f"{e}.csv"]
        assert (none["row"], chosen["row"]) == (f"{e}, no TTA", f"{e}, TTA chosen on OOF")
        assert none["tta"] == "none"  # nothing chosen: honest is the folds' mean, in-sample the pooled accuracy
        assert none["oof_accuracy"] == pytest.approx(none["honest_accuracy"], abs=0.005)
        spec = read_json(sub / f"{e}.blend.json")
        assert none["oof_accuracy"] == spec["scores"][0]["oof_accuracy_no_tta"]  # chosen among none and others
    assert re.fullmatch(r"blend \(Caruana: demo-effnet \d\.\d\d, demo-resnet \d\.\d\d\)", rows.loc["demo.csv", "row"])
    assert read_json(sub / "demo-stack.blend.json")["config"]["method"] == "stack"
    blends = rows.loc[["demo.csv", "demo-stack.csv"], "honest_accuracy"]
    teacher = blends.index[blends.argmax()]  # ties: the first
    singles = rows.loc[["demo-effnet.csv", "demo-resnet.csv"], "honest_accuracy"]
    student = singles.index[singles.argmax()].removesuffix(".csv")
    config = read_json(project / "runs" / "demo" / f"{student}-pseudo" / "fold0" / "config.json")
    assert config["pseudo"] == str(sub / teacher.replace(".csv", ".blend.json")) and config["pseudo_threshold"] == 0.1
    oofs = [pd.read_csv(project / "runs" / "demo" / e / "fold0" / "oof.csv") for e in (student, f"{student}-pseudo")]
    assert not np.allclose(oofs[0][[str(c) for c in range(10)]], oofs[1][[str(c) for c in range(10)]])  # it learnt
    assert table["submission"].tolist()[6:] == [f"{student}-pseudo.csv", "demo-stack-pseudo.csv"]
    stacked = read_json(sub / "demo-stack-pseudo.blend.json")
    assert stacked["config"]["method"] == "stack" and sorted(e["name"] for e in stacked["experiments"]) == sorted(
        f"{e}-pseudo" if e == student else e for e in ("demo-effnet", "demo-resnet"))


def test_the_pseudo_move_and_the_closing_line_choose_on_the_honest_score_alone():
    """A table whose in-sample, honest and leaderboard columns each crown another row: the teacher, the student
    and the best row are the honest column's (the demo's own run has them agree too often to tell)."""
    from kit.demo import best_row, pseudo_pair

    table = pd.DataFrame({"row": ["a, no TTA", "a, TTA chosen on OOF", "b, no TTA", "b, TTA chosen on OOF",
                                  "blend (Caruana: a 0.50, b 0.50)", "stacking"],
                          "oof_accuracy": [.80, .81, .90, .95, .90, .99],
                          "honest_accuracy": [.80, .82, .90, .81, .93, .91],
                          "leaderboard_accuracy": [.80, .80, .95, .96, .90, .97]})
    teacher, student = pseudo_pair(table, "honest_accuracy")
    assert (teacher["row"], student) == ("blend (Caruana: a 0.50, b 0.50)", "a")
    assert best_row(table, "honest_accuracy")["row"] == "blend (Caruana: a 0.50, b 0.50)"
