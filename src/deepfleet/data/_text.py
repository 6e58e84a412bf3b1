"""Text sources: .txt / .jsonl files (or folders of them) become packed token sequences.

A byte-level BPE tokenizer is trained on the corpus with Hugging Face `tokenizers` (or a
given tokenizer.json is used); every document is encoded and followed by an end-of-text
token, and the token stream is cut into windows of seq_len + 1 tokens that overlap by one
(x = window[:-1], target = window[1:], so every token is a target once). The windows go to
a temporary file that the shard writer's workers memory-map: memory stays bounded by a
batch of documents and a shard, whatever the corpus size."""

from __future__ import annotations

import json
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfleet.data._samples import MappedRows, Samples
from deepfleet.errors import UserError

END_OF_TEXT = "<|endoftext|>"
TEXT_SUFFIXES = (".txt", ".jsonl")
_DOCS_PER_BATCH = 256


@dataclass(frozen=True)
class TextOptions:
    seq_len: int = 128
    vocab_size: int = 4096
    tokenizer: str | None = None  # a tokenizer.json to use instead of training one
    max_bytes: int | None = None  # read at most this much text


def _files(path: Path, suffixes: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not skip_part(p.relative_to(path).parts, skip)
    )


def skip_part(parts: tuple[str, ...], skip: tuple[str, ...]) -> bool:
    return any(part in skip for part in parts)


def _documents(files: list[Path], max_bytes: int | None) -> Iterator[str]:
    """Each .txt (or other) file is a document; each line of a .jsonl file is one (its
    "text" field, or the line's string). Stops once max_bytes of text were given."""
    given = 0
    for path in files:
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text: skipped, as a folder of mixed files expects
        docs: list[str]
        if path.suffix.lower() == ".jsonl":
            docs = []
            for number, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{number}: not a JSON line") from None
                text = item.get("text") if isinstance(item, dict) else item
                if not isinstance(text, str):
                    raise UserError(f'{path}:{number}: needs a string or a "text" field')
                docs.append(text)
        else:
            docs = [raw]
        for doc in docs:
            if max_bytes is not None and given >= max_bytes:
                return
            if max_bytes is not None:
                doc = doc.encode("utf-8")[: max_bytes - given].decode("utf-8", "ignore")
            given += len(doc.encode("utf-8"))
            if doc:
                yield doc


def train_tokenizer(documents: Iterator[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2's scheme) with END_OF_TEXT as its one special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer)
    return tokenizer


def load_tokenizer(source: str | Path | bytes):
    """A tokenizer.json (a path or its bytes); one line naming it when it does not parse."""
    from tokenizers import Tokenizer

    where = "tokenizer" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            tokenizer = Tokenizer.from_str(source.decode("utf-8"))
        else:
            tokenizer = Tokenizer.from_file(str(source))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: cannot read the tokenizer ({err})") from None
    except Exception as err:  # tokenizers raises its own Exception for a bad file
        raise UserError(f"{where}: not a tokenizer.json ({str(err).splitlines()[0]})") from None
    if tokenizer.token_to_id(END_OF_TEXT) is None:
        raise UserError(f"{where}: the tokenizer has no {END_OF_TEXT} token")
    return tokenizer


def _pack(tokenizer, documents: Iterator[str], out: Path, seq_len: int) -> int:
    """Windows of seq_len + 1 int32 tokens, overlapping by one, appended to `out`."""
    eot = tokenizer.token_to_id(END_OF_TEXT)
    carry = np.zeros(0, np.int32)
    windows = 0
    with out.open("wb") as sink:

        def flush(batch: list[str]) -> None:
            nonlocal carry, windows
            ids = [np.array(e.ids + [eot], np.int32) for e in tokenizer.encode_batch(batch)]
            stream = np.concatenate([carry, *ids])
            count = (len(stream) - 1) // seq_len
            if count > 0:
                starts = np.arange(count) * seq_len
                sink.write(stream[starts[:, None] + np.arange(seq_len + 1)].tobytes())
                windows += count
            carry = stream[count * seq_len :]

        batch: list[str] = []
        for doc in documents:
            batch.append(doc)
            if len(batch) == _DOCS_PER_BATCH:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    return windows


def load_text(
    path: str | Path,
    options: TextOptions,
    suffixes: tuple[str, ...] = TEXT_SUFFIXES,
    skip: tuple[str, ...] = (),
) -> Samples:
    path = Path(path)
    files = _files(path, suffixes, skip)
    if not files or next(_documents(files, options.max_bytes), None) is None:
        kinds = ", ".join(suffixes)
        raise UserError(f"{path}: no text found (expected {kinds} files holding UTF-8 text)")
    if options.tokenizer:
        tokenizer = load_tokenizer(options.tokenizer)
    else:
        tokenizer = train_tokenizer(_documents(files, options.max_bytes), options.vocab_size)
    keep = tempfile.TemporaryDirectory(prefix="deepfleet-text-")
    windows_file = Path(keep.name) / "windows.i32"
    count = _pack(tokenizer, _documents(files, options.max_bytes), windows_file, options.seq_len)
    if count == 0:
        raise UserError(
            f"{path}: the text gives fewer than {options.seq_len + 1} tokens; lower "
            "data.seq_len or add text"
        )
    width, length = options.seq_len + 1, options.seq_len
    x = MappedRows(str(windows_file), "int32", count, width, slice(0, length))
    y = MappedRows(str(windows_file), "int32", count, width, slice(1, width))
    vocab = tokenizer.get_vocab_size()
    return Samples(
        x=x,
        y=y,
        class_names=[],
        description=f"text {path}: {len(files)} file(s), {count} sequences of {length} tokens, "
        f"vocabulary {vocab}",
        tokens=True,
        target_stats={"vocab_size": vocab, "end_of_text": tokenizer.token_to_id(END_OF_TEXT)},
        extra_files={"tokenizer.json": tokenizer.to_str().encode("utf-8")},
        keep=keep,
    )


def stdlib_folder() -> Path:
    """The Python standard library's own sources, found through sysconfig."""
    return Path(sysconfig.get_paths()["stdlib"])


def load_stdlib_text(options: TextOptions) -> Samples:
    """The standard library's .py files: a corpus every machine with Python has."""
    # Installed packages are not the standard library, and differ between machines.
    return load_text(
        stdlib_folder(), options, suffixes=(".py",), skip=("site-packages", "dist-packages")
    )
