"""Installing into a checkpoint directory: the config.json edit, idempotence, refusals."""

from __future__ import annotations

import json
import os

import pytest

from patcher.deploy import checkpoint
from patcher.deploy.checkpoint import AUTO_MAP, BACKUP, CheckpointError, install, with_auto_map
from patcher.series.contract import NOTICE_MARK

# As transformers' save_pretrained writes it: sorted keys, indent 2, a final newline.
SAVED = (
    json.dumps(
        {
            "architectures": ["GemmaForCausalLM"],
            "bos_token_id": 2,
            "hidden_size": 64,
            "model_type": "gemma",
            "rms_norm_eps": 1e-06,
            "torch_dtype": "float32",
        },
        indent=2,
        sort_keys=True,
    )
    + "\n"
)
FILES = {
    "modeling_gemma_vacc.py": f"# Copyright\n{NOTICE_MARK} from transformers 4.40.2\nimport torch\n",
    "configuration_gemma_vacc.py": f"{NOTICE_MARK} from transformers 4.40.2\n",
    "quantization_vacc.py": '"""int8"""\n',
}


def without_auto_map(text: str) -> str:
    """``text`` with the auto_map block (as with_auto_map writes it) cut out again."""
    start = text.index('  "auto_map"')
    end = text.index("},\n", start) + 3
    return text[:start] + text[end:]


def test_auto_map_goes_to_its_sorted_place_and_nothing_else_changes():
    out = with_auto_map(SAVED)
    assert json.loads(out)["auto_map"] == AUTO_MAP
    assert list(json.loads(out)) == sorted(json.loads(out))
    assert without_auto_map(out) == SAVED
    assert '"rms_norm_eps": 1e-06' in out  # numbers spelled as they were


def test_unsorted_keys_get_auto_map_last():
    text = '{\n    "model_type": "gemma",\n    "architectures": ["GemmaForCausalLM"]\n}\n'
    out = with_auto_map(text)
    assert list(json.loads(out)) == ["model_type", "architectures", "auto_map"]
    assert out.startswith(
        '{\n    "model_type": "gemma",\n    "architectures": ["GemmaForCausalLM"],\n    "auto_map": {\n'
    )
    assert '\n        "AutoConfig": ' in out  # the file's own indentation unit


@pytest.mark.parametrize(
    "text",
    [
        '{"model_type": "gemma", "a": 1}',
        '{\r\n\t"z": 1,\r\n\t"model_type": "gemma"\r\n}\r\n',
        "{}",
        '{\n  "b": 1 ,\n  "c": 2\n}',
    ],
    ids=["one-line", "crlf-tabs", "empty", "odd-spacing"],
)
def test_layouts_are_kept_and_the_edit_is_idempotent(text):
    out = with_auto_map(text)
    assert json.loads(out) == {**json.loads(text), "auto_map": AUTO_MAP}
    assert with_auto_map(out) == out
    if "\r\n" in text:
        assert "\n" not in out.replace("\r\n", "")
    if "\n" not in text:
        assert "\n" not in out


def test_other_auto_map_entries_are_kept():
    text = '{\n  "auto_map": {\n    "AutoModelForSequenceClassification": "m.C"\n  },\n  "b": 1\n}\n'
    out = json.loads(with_auto_map(text))
    assert out["auto_map"] == {**AUTO_MAP, "AutoModelForSequenceClassification": "m.C"}


def test_auto_map_pointing_elsewhere_needs_force():
    text = json.dumps({"auto_map": {"AutoModelForCausalLM": "other.Model"}})
    with pytest.raises(CheckpointError, match="AutoModelForCausalLM to other code"):
        with_auto_map(text)
    assert json.loads(with_auto_map(text, force=True))["auto_map"] == AUTO_MAP


@pytest.fixture
def ckpt(tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text(SAVED)
    (directory / "model.safetensors").write_bytes(b"weights")
    return directory


def snapshot(directory):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_install_writes_files_auto_map_and_one_backup(ckpt):
    done = install(ckpt, FILES, mark=NOTICE_MARK)
    assert done.written == [*FILES, "config.json"]
    assert done.backup == ckpt / BACKUP
    assert (ckpt / BACKUP).read_text() == SAVED
    assert json.loads((ckpt / "config.json").read_text())["auto_map"] == AUTO_MAP
    for name, text in FILES.items():
        assert (ckpt / name).read_text() == text
    assert (ckpt / "model.safetensors").read_bytes() == b"weights"
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]  # no temporary left


def test_second_install_changes_nothing_not_even_mtimes(ckpt):
    install(ckpt, FILES, mark=NOTICE_MARK)
    before = snapshot(ckpt)
    again = install(ckpt, FILES, mark=NOTICE_MARK)
    assert not again.changed and again.backup is None
    assert snapshot(ckpt) == before


def test_new_outputs_replace_patchers_own_files_and_keep_the_first_backup(ckpt):
    install(ckpt, FILES, mark=NOTICE_MARK)
    newer = {**FILES, "modeling_gemma_vacc.py": FILES["modeling_gemma_vacc.py"] + "# newer\n"}
    done = install(ckpt, newer, mark=NOTICE_MARK)
    assert done.written == ["modeling_gemma_vacc.py"]
    assert (ckpt / BACKUP).read_text() == SAVED


def test_file_modes_are_kept(ckpt):
    os.chmod(ckpt / "config.json", 0o640)
    install(ckpt, FILES, mark=NOTICE_MARK)
    assert (ckpt / "config.json").stat().st_mode & 0o777 == 0o640
    assert (ckpt / "modeling_gemma_vacc.py").stat().st_mode & 0o444 == 0o444  # readable, not 0600


def test_a_foreign_modeling_file_is_refused_and_nothing_written(ckpt):
    (ckpt / "modeling_gemma_vacc.py").write_text("# edited by hand from screenshots\n")
    before = snapshot(ckpt)
    with pytest.raises(CheckpointError, match="was not generated by patcher.*--force"):
        install(ckpt, FILES, mark=NOTICE_MARK)
    assert snapshot(ckpt) == before
    install(ckpt, FILES, mark=NOTICE_MARK, force=True)
    assert (ckpt / "modeling_gemma_vacc.py").read_text() == FILES["modeling_gemma_vacc.py"]


def test_other_python_files_are_left_alone(ckpt):
    (ckpt / "tokenization_custom.py").write_text("# theirs\n")
    install(ckpt, FILES, mark=NOTICE_MARK)
    assert (ckpt / "tokenization_custom.py").read_text() == "# theirs\n"


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "has no config.json"),
        ("{not json", "not a readable JSON object"),
        ("[1, 2]", "not a readable JSON object"),
        ('{"model_type": "llama"}', "model_type 'llama', not 'gemma'"),
    ],
    ids=["missing", "malformed", "not-an-object", "other-model"],
)
def test_bad_checkpoints_are_refused(tmp_path, config, message):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    if config is not None:
        (directory / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=message):
        install(directory, FILES, mark=NOTICE_MARK)
    assert sorted(p.name for p in directory.iterdir()) == ([] if config is None else ["config.json"])


def test_a_failure_while_staging_leaves_the_directory_as_it_was(ckpt, monkeypatch):
    before = snapshot(ckpt)
    real = checkpoint._stage
    calls = []

    def failing(directory, name, text, mode):
        calls.append(name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(directory, name, text, mode)

    monkeypatch.setattr(checkpoint, "_stage", failing)
    with pytest.raises(CheckpointError, match="No space left"):
        install(ckpt, FILES, mark=NOTICE_MARK)
    assert snapshot(ckpt) == before


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        install(tmp_path / "nowhere", FILES)
