"""Text sources: packed token sequences with a trained byte-level BPE tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_deepfleet
from deepfleet.data import load_tokenizer, read_manifest, read_split, write_dataset
from deepfleet.data._text import END_OF_TEXT, TextOptions, load_text
from deepfleet.errors import UserError
from deepfleet.tasks import CausalLMTask


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    lines = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(300)]
    (folder / "a.txt").write_text("".join(lines[:150]), encoding="utf-8")
    docs = [json.dumps({"text": line}) for line in lines[150:]]
    (folder / "sub" / "b.jsonl").write_text("\n".join(docs) + "\n", encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG not text")
    return folder


def test_sequences_are_the_tokenized_documents_shifted_by_one(corpus):
    samples = load_text(corpus, TextOptions(seq_len=16, vocab_size=300))
    tokenizer = load_tokenizer(samples.extra_files["tokenizer.json"])
    eot = tokenizer.token_to_id(END_OF_TEXT)
    x, y = samples.x[np.arange(len(samples.x))], samples.y[np.arange(len(samples.y))]
    assert x.shape == y.shape == (len(samples.x), 16) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets: the next token
    np.testing.assert_array_equal(y[:-1, -1], x[1:, 0])  # windows follow one another
    first = tokenizer.encode((corpus / "a.txt").read_text(encoding="utf-8")).ids
    np.testing.assert_array_equal(x.ravel()[: len(first)], first[: x.size])
    assert eot in x  # documents are separated by the end-of-text token
    assert samples.target_stats["vocab_size"] == tokenizer.get_vocab_size() <= 300


def test_prepare_is_deterministic_whatever_the_workers(corpus, tmp_path):
    task = CausalLMTask()
    options = TextOptions(seq_len=16, vocab_size=300)
    folders = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        write_dataset(
            load_text(corpus, options),
            out,
            shards=3,
            val_fraction=0.1,
            test_fraction=0.1,
            seed=0,
            workers=workers,
            task=task.name,
            stratify=task.stratify,
        )
        folders.append(out)
    a, b = (read_manifest(f) for f in folders)
    assert a.raw["splits"] == b.raw["splits"]  # same shard names: same bytes (content hashes)
    assert a.task == "causal_lm" and a.tokens and a.targets.shape == (16,)
    assert a.file_bytes("tokenizer.json") == b.file_bytes("tokenizer.json")
    train = read_split(a, "train")
    assert train.x.dtype.is_floating_point is False  # token ids reach the model as int64


def test_a_given_tokenizer_is_used(corpus, tmp_path):
    trained = load_text(corpus, TextOptions(seq_len=16, vocab_size=280))
    path = tmp_path / "tokenizer.json"
    path.write_bytes(trained.extra_files["tokenizer.json"])
    again = load_text(corpus, TextOptions(seq_len=16, tokenizer=str(path)))
    assert again.extra_files["tokenizer.json"] == trained.extra_files["tokenizer.json"]


def test_bad_text_input_is_one_line(tmp_path, corpus):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match="no text found"):
        load_text(empty, TextOptions())
    broken = tmp_path / "tok.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not a tokenizer.json"):
        load_text(corpus, TextOptions(tokenizer=str(broken)))
    with pytest.raises(UserError, match="fewer than"):
        load_text(corpus, TextOptions(seq_len=100_000, vocab_size=300))


def test_prepare_command_refuses_a_text_path_with_no_text(tmp_path):
    folder = tmp_path / "nothing"
    folder.mkdir()
    done = run_deepfleet("prepare", f"text:{folder}", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "no text found" in done.stderr and "Traceback" not in done.stderr
