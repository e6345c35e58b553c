"""memf.training.tuning and settings: search spaces, a killed study resumes to the same trials, failures count."""

import pytest

from memf.training.settings import TuningSettings, parse_space, split_params
from memf.training.tuning import Outcome, run_study, trials_frame

SPACE = parse_space("s", {
    "train.lr": {"log_uniform": [1e-4, 1e-1]},
    "model.width": {"choice": [8, 16, 32]},
    "model.predictor_hidden": {"choice": [None, [16], [32, 16]]},
    "model.layers": {"int": [1, 3]},
})
SETTINGS = TuningSettings(trials=6, startup_trials=2, pruner="none")


def score(trial) -> Outcome:
    p = trial.params
    value = (p["train.lr"] - 0.01) ** 2 + p["model.width"] / 100 + p["model.layers"]
    return Outcome(value, 1 - value, 3)


class Killed(BaseException):
    """Stands for the job being killed: nothing in the study code catches it."""


def params_of(study):
    return [t.params for t in study.trials if t.state.name == "COMPLETE"]


def test_choices_decode_to_their_config_values(tmp_path):
    study = run_study("s", SPACE, score, SETTINGS, tmp_path / "j.journal", 0, prunable=False)
    frame = trials_frame(study, SPACE)
    assert frame.height == 6 and set(frame["state"]) == {"COMPLETE"}
    seen = []
    study2 = run_study("s2", SPACE, lambda t: seen.append(t.params) or score(t), SETTINGS, tmp_path / "k.journal", 0,
                       prunable=False)
    assert len(seen) == 6 and len(study2.trials) == 6
    assert all(p["model.predictor_hidden"] in (None, [16], [32, 16]) and p["model.width"] in (8, 16, 32) for p in seen)
    train, model = split_params(seen[0])
    assert set(train) == {"lr"} and set(model) == {"width", "predictor_hidden", "layers"}


def test_a_killed_study_resumes_to_the_same_trials(tmp_path):
    whole = run_study("s", SPACE, score, SETTINGS, tmp_path / "whole.journal", 1, prunable=False)
    calls = []

    def dies_at_the_fourth(trial):
        calls.append(trial.number)
        if len(calls) == 4:
            raise Killed
        return score(trial)

    journal = tmp_path / "cut.journal"
    with pytest.raises(Killed):
        run_study("s", SPACE, dies_at_the_fourth, SETTINGS, journal, 1, prunable=False)
    resumed = run_study("s", SPACE, score, SETTINGS, journal, 1, prunable=False)
    frame = trials_frame(resumed, SPACE)
    assert frame["state"].to_list().count("STALE") == 1 and frame["state"].to_list().count("COMPLETE") == 6
    assert params_of(resumed) == params_of(whole)  # the same settings as an uninterrupted study


def test_failed_trials_count_toward_the_budget(tmp_path):
    def refuses_wide(trial):
        if trial.params["model.width"] == 32:
            raise ValueError("width 32 is not divisible by heads 3")
        return score(trial)

    study = run_study("s", SPACE, refuses_wide, SETTINGS, tmp_path / "j.journal", 0, prunable=False)
    frame = trials_frame(study, SPACE)
    assert frame.height == 6
    failed = frame.filter(frame["state"] == "FAIL")
    assert failed["error"].to_list() == ["width 32 is not divisible by heads 3"] * failed.height


def test_pruned_trials_keep_their_best_validation_score(tmp_path):
    def curve(trial):
        for epoch in range(1, 6):
            trial.report(epoch, 10.0 - epoch if trial.number < 2 else 20.0, 0.1 * epoch)
        return Outcome(5.0, 0.5, 5)

    settings = TuningSettings(trials=4, startup_trials=2, pruner="median", prune_warmup_epochs=1)
    study = run_study("s", SPACE, curve, settings, tmp_path / "j.journal", 0, prunable=True)
    frame = trials_frame(study, SPACE)
    assert frame["state"].to_list()[2:] == ["PRUNED", "PRUNED"]
    assert frame["val_r2"].null_count() == 0


@pytest.mark.parametrize(("spec", "match"), [
    ({"lr": {"uniform": [0, 1]}}, "expected 'train.<setting>' or 'model.<option>'"),
    ({"train.device": {"choice": ["cpu"]}}, "not a tunable training setting"),
    ({"train.lr": {"log_uniform": [0, 1]}}, "expected low > 0"),
    ({"train.lr": {"uniform": [2, 1]}}, "low <= high"),
    ({"model.width": {"int": [1.5, 3]}}, "low <= high"),
    ({"model.width": {"grid": [1, 2]}}, "expected one of"),
    ({"model.width": {"choice": []}}, "non-empty list"),
])
def test_malformed_spaces_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_space("s", spec)
