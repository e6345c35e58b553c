"""memf.config: the schema's defaults are the shipped config, the shipped configs load clean, and the
evaluation keeps what the matrix has."""

from pathlib import Path

import pytest
import yaml

from memf.config import ConfigError, evaluation_plan, load_config, schema_with_defaults, validate_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def load(path: Path, tmp_path: Path) -> dict:
    config = yaml.safe_load(path.read_text()) or {}
    load_config(config, SCHEMA, tmp_path)
    return config


def test_schema_defaults_are_the_shipped_config():
    schema = yaml.safe_load(SCHEMA.read_text())
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert schema_with_defaults(schema, shipped) == schema, (
        "config.yaml and the schema's defaults differ: run python -m memf.config "
        "workflow/schemas/config.schema.yaml config.yaml")
    filled: dict = {}
    assert validate_schema(filled, schema) == [] and validate_schema(shipped, schema) == []
    assert {k: v for k, v in filled.items() if k != "experiments"} == {
        k: v for k, v in shipped.items() if k != "experiments"}
    assert list(filled["experiments"]) == ["memf"]


@pytest.mark.parametrize("name", ["config.yaml", "config.study.yaml", "config.paper.yaml", "config.worlds.yaml",
                                  "config.scale.yaml", "config.curves.yaml", "config.curves.features.yaml",
                                  "tests/configs/tiny.yaml"])
def test_every_shipped_config_loads_clean(name, tmp_path):
    config = load(ROOT / name, tmp_path)
    assert config["experiments"] and config["split"]["folds"] >= 2


def test_problems_are_all_reported_one_line_each(tmp_path):
    config = {"experiments": {"a": {"model": "memff", "feature_set": "demo"},
                              "b": {"model": "memf", "feature_set": "demo", "options": {"widht": 3}}}}
    with pytest.raises(ConfigError) as error:
        load_config(config, SCHEMA, tmp_path)
    problems = error.value.problems
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert problems[0].startswith("config key 'experiments.a.model': 'memff' is not a model")


def test_evaluation_keeps_the_rows_and_comparisons_the_matrix_has(tmp_path):
    config = {"experiments": {"memf": {"model": "memf", "feature_set": "demo"},
                              "ridge": {"model": "ridge", "feature_set": "demo"}}}
    load_config(config, SCHEMA, tmp_path)
    evaluation, notes = evaluation_plan(config)
    assert list(evaluation["tables"]) == ["table9", "references"] or list(evaluation["tables"]) == ["table9"]
    assert evaluation["tables"]["table9"]["rows"] == {"ridge": "Ridge (mean-pooled features)",
                                                      "ensemble": "Ensemble (weights from validation)", "memf": "MEMF"}
    assert evaluation["compare_to"] == {"demo": "memf"}
    assert evaluation["ceilings"]["latent"] == [] and evaluation["importance"]["table"] is None
    assert any("table7" in n and "not written" in n for n in notes)


def test_a_media_free_simulation_accepts_only_the_latent_feature_set(tmp_path):
    from memf.config import MEDIA_DEFECTS
    from memf.simulate.params import MEDIA_DEFECT_KEYS

    assert MEDIA_DEFECTS == MEDIA_DEFECT_KEYS
    latent = {"ridge-latent": {"model": "ridge", "feature_set": "latent", "options": {"pooling": "set"}}}
    config = {"simulator": {"media": False}, "experiments": dict(latent)}
    load_config(config, SCHEMA, tmp_path)  # tables, latents and truth are all the latent ceiling needs
    config = {"simulator": {"media": False, "defects": {"no_audio_stream": 0.1, "missing_modality": 0.2}},
              "experiments": {**latent, "memf": {"model": "memf", "feature_set": "demo"}},
              "predict": {"bundle": "memf", "datasets": {"demo": "results/demo/raw"}}}
    with pytest.raises(ConfigError) as error:
        load_config(config, SCHEMA, tmp_path)
    assert error.value.problems == [
        "config key 'experiments.memf.feature_set': 'demo'; simulator.media is false (no media are written), so "
        "only the feature set 'latent' is accepted",
        "config key 'predict.datasets.demo': 'results/demo/raw'; simulator.media is false (no media are written), so "
        "only datasets other than the simulated one (dataset.root) are accepted",
        "config key 'simulator.defects.no_audio_stream': 0.1; simulator.media is false (no media are written), so "
        "only 0 is accepted",
    ]
    # Without the simulator the setting says nothing: the user's dataset has its own media.
    (tmp_path / "mine").mkdir()
    for table in ("streams", "anchors", "items", "clips"):
        (tmp_path / "mine" / f"{table}.parquet").write_bytes(b"")
    load_config({"dataset": {"root": "mine", "simulate": False}, "simulator": {"media": False}}, SCHEMA, tmp_path)


def test_the_fixed_protocol_is_checked_when_the_workflow_loads(tmp_path):
    config = {"simulator": {"n_streams": 1000}, "split": {"mode": "fixed", "train_sizes": [300, 1000],
                                                           "replicates": [3]}}
    with pytest.raises(ConfigError) as error:
        load_config(config, SCHEMA, tmp_path)
    assert error.value.problems == [
        "config key 'split.replicates': [3]; one count per entry of split.train_sizes (2 entries)",
        "config key 'simulator.n_streams': 1000; the fixed protocol needs at least 3500 (largest split.train_sizes "
        "+ split.validation + split.test)"]
