"""The default encoder's files are checked against pinned SHA-256 digests before they are loaded."""

import hashlib
import shutil

import pytest

from models import encoder
from models.encoder import DEFAULT_ENCODER_SHA256, Encoder, default_encoder_path, verify_files
from newsflow.errors import ModelError


def test_the_installed_default_encoder_matches_its_pinned_digests():
    path = default_encoder_path()  # verifies every pinned file
    assert {"model.safetensors", "config.json", "tokenizer.json", "vocab.txt"} <= set(DEFAULT_ENCODER_SHA256)
    assert all((path / name).is_file() for name in DEFAULT_ENCODER_SHA256)


def test_a_changed_or_missing_file_is_refused_with_what_to_do(tmp_path):
    source = default_encoder_path()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(source / name, tmp_path / name)
    pinned = {name: DEFAULT_ENCODER_SHA256[name] for name in ("config.json", "vocab.txt")}
    verify_files(tmp_path, pinned)
    with open(tmp_path / "vocab.txt", "ab") as fh:
        fh.write(b"[EVIL]\n")
    with pytest.raises(ModelError) as refused:
        verify_files(tmp_path, pinned)
    message = str(refused.value)
    assert "vocab.txt" in message and "does not match the SHA-256" in message
    assert "--force-reinstall" in message and "NEWSFLOW_MODELS_ENCODER" in message
    (tmp_path / "config.json").unlink()
    with pytest.raises(ModelError, match="found missing"):
        verify_files(tmp_path, {"config.json": pinned["config.json"]})


def test_the_encoder_does_not_load_weights_whose_digest_is_not_the_pinned_one(monkeypatch):
    weights = default_encoder_path() / "model.safetensors"
    wrong = hashlib.sha256(b"other weights").hexdigest()
    monkeypatch.setattr(encoder, "DEFAULT_ENCODER_SHA256", {"model.safetensors": wrong})
    with pytest.raises(ModelError, match=str(weights)):
        Encoder("")
