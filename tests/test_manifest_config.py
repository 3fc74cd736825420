import json
import os

import pytest

from pipeline.config import Config, key_fields
from pipeline.errors import ConfigError, ManifestError, MissingFile, PathEscapesRoot
from pipeline.manifest import load, resolve_path
from dummies import make_items, write_manifest


def test_csv_and_jsonl_read_together_with_metadata(tmp_path):
    rows = make_items(tmp_path, 0, 2)
    write_manifest(tmp_path / "a.csv", [{**rows[0], "channel": "email"}])
    (tmp_path / "b.jsonl").write_text(json.dumps({**rows[1], "priority": 3}) + "\n")
    items = load([str(tmp_path)])
    assert [i.id for i in items] == ["item000", "item001"]
    assert items[0].meta == {"channel": "email"} and items[1].meta == {"priority": "3"}


def test_duplicate_ids_and_unknown_splits_are_listed_before_work(tmp_path):
    rows = make_items(tmp_path, 0, 3)
    rows[1]["id"] = rows[0]["id"]
    rows[2]["split"] = "training"
    write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(ManifestError) as err:
        load(str(tmp_path / "m.csv"))
    msg = str(err.value)
    assert "m.csv:3: duplicate id 'item000' (first at" in msg and "m.csv:4" in msg and "unknown split 'training'" in msg


def test_ids_unique_across_manifests(tmp_path):
    rows = make_items(tmp_path, 0, 1)
    write_manifest(tmp_path / "a.csv", rows)
    write_manifest(tmp_path / "b.csv", rows)
    with pytest.raises(ManifestError, match="duplicate id"):
        load([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])


def test_missing_columns_and_unreadable(tmp_path):
    (tmp_path / "noid.csv").write_text("name,text\nx,hello\n")
    with pytest.raises(ManifestError, match="missing required column 'id'"):
        load(str(tmp_path / "noid.csv"))
    (tmp_path / "nomod.csv").write_text("id,label\nx,a\n")
    with pytest.raises(ManifestError, match="no modality column"):
        load(str(tmp_path / "nomod.csv"))
    (tmp_path / "bin.csv").write_bytes(b"id,text\n\xff\xfe\x00bad\n")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load(str(tmp_path / "bin.csv"))
    with pytest.raises(ManifestError, match="not found"):
        load(str(tmp_path / "nope.csv"))


def test_problems_further_down_a_manifest_read_as_a_stream_are_reported_as_before(tmp_path):
    good = "".join(f"i{i},text {i}\n" for i in range(50))
    (tmp_path / "late_bytes.csv").write_bytes(b"id,text\n" + good.encode() + b"x,\xff\xfe bad\n")
    with pytest.raises(ManifestError, match="cannot read manifest .*late_bytes.csv"):
        load(str(tmp_path / "late_bytes.csv"))
    # a malformed row is reported before the missing modality column, as when the file was read whole
    (tmp_path / "late_field.csv").write_text("id,label\n" + "".join(f"i{i},a\n" for i in range(5)) + "j,a,extra\n")
    with pytest.raises(ManifestError, match="late_field.csv:7: more fields than the header has"):
        load(str(tmp_path / "late_field.csv"))
    (tmp_path / "header_only.csv").write_text("id,label\n")
    assert load(str(tmp_path / "header_only.csv")) == []


def test_paths_confined_to_data_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret.wav").write_bytes(b"x")
    (root / "ok.wav").write_bytes(b"x")
    os.symlink(tmp_path / "secret.wav", root / "link.wav")
    write_manifest(root / "m.csv", [{"id": "a", "audio": "ok.wav"}])
    item = load(str(root / "m.csv"))[0]
    assert resolve_path(item, "ok.wav", False, 10**6)[0] == str(root / "ok.wav")
    for bad in ["../secret.wav", str(tmp_path / "secret.wav"), "link.wav"]:
        with pytest.raises(PathEscapesRoot):
            resolve_path(item, bad, False, 10**6)
    assert resolve_path(item, "../secret.wav", True, 10**6)[0] == str(tmp_path / "secret.wav")
    with pytest.raises(MissingFile):
        resolve_path(item, "gone.wav", False, 10**6)


def test_config_unknown_keys_get_a_hint(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'n_mfcc'"):
        Config.load(None, ["mfcc.n_mfc=3"])
    with pytest.raises(ConfigError, match="did you mean 'mfcc'"):
        Config.load(None, ["mfccc.n_mfcc=3"])
    with pytest.raises(ConfigError, match="expected int"):
        Config.load(None, ["mfcc.n_mfcc=many"])
    with pytest.raises(ConfigError, match="normalize must be"):
        Config.load(None, ["clean_audio.normalize=loud"])


def test_config_file_overrides_and_execution_only_fields(tmp_path):
    (tmp_path / "c.toml").write_text("[mfcc]\nn_mfcc = 20\nbatch_size = 8\n")
    cfg = Config.load(tmp_path / "c.toml", ["mfcc.deltas=true"])
    assert cfg["mfcc"].n_mfcc == 20 and cfg["mfcc"].deltas is True and cfg["mfcc"].batch_size == 8
    assert "batch_size" not in key_fields(cfg["mfcc"])


def test_bundled_config_lists_every_setting_with_its_default():
    import dataclasses
    import tomllib

    from pipeline.inputs import DEFAULT_CONFIG

    path = os.path.join(os.path.dirname(__file__), "..", DEFAULT_CONFIG)
    with open(path, "rb") as f:
        written = tomllib.load(f)
    defaults = Config.from_dict({}).to_dict()
    assert written == defaults, "pipeline.toml drifted from the defaults in code"
    assert all(dataclasses.is_dataclass(v) for v in Config.from_dict({}).sections.values())


def test_nested_overrides_keep_the_other_defaults():
    cfg = Config.load(None, ["ray.stages.bert.actors=2", "ray.stages.cnn.num_gpus=1"])
    assert cfg["ray"].stages["bert"] == {"actors": 2, "num_cpus": 1, "num_gpus": 0}
    assert cfg["ray"].stages["cnn"]["num_gpus"] == 1 and cfg["ray"].stages["cnn"]["actors"] == 1
    with pytest.raises(ConfigError, match="unknown keys"):
        Config.load(None, ["ray.stages.bert.actor=2"])


def test_a_renamed_setting_of_an_older_config_is_read_under_its_new_name():
    from pipeline.config import Config

    old = Config.from_dict({"bert": {"dtype": "bfloat16", "runtime": "torch"}, "multilingual": {"dtype": "float32"}})
    assert old["bert"].precision == "bf16" and old["multilingual"].precision == "fp32"
    assert "dtype" not in old.to_dict()["bert"]
    with pytest.raises(ConfigError, match="precision must be fp32 or bf16"):
        Config.from_dict({"bert": {"dtype": "float16", "runtime": "torch"}})
