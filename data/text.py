"""Helpers shared by the file-based loaders (IMDB, Multi30k, CIFAR, TU graphs).

Cache files, missing-file errors, downloads, and tokenizer training with `tokenizers`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

TOKENIZERS = ("word", "bpe")
TRUNCATE = ("head", "tail")   # keep the first / the last max_len tokens of a long text


def cache_key(**options) -> str:
    """Short stable hash of the options that change a processed result."""
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` and move the result to `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cached(path: Path, build: Callable[[], dict]) -> dict:
    """Load `path` (a torch file) if present, else build, save atomically and return."""
    path = Path(path)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    obj = build()
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
    return obj


def missing_files_error(dataset: str, directory: Path, files: Iterable[str], root) -> FileNotFoundError:
    names = "\n".join(f"  {f}" for f in files)
    return FileNotFoundError(
        f"{dataset}: missing raw files. Expected in {directory}:\n{names}\n"
        f"Put them there (the directory is under data.root={root}), point data.root=... at a "
        f"directory that has them, or set data.download=true.")


def download(url: str, dest: Path) -> Path:
    """Fetch `url` to `dest` atomically (nothing is left behind on failure)."""
    def fetch(tmp: str) -> None:
        with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    atomic_write(dest, fetch)
    return dest


def check_choice(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r}: allowed values are {list(allowed)}")


def train_tokenizer(texts: list[str], kind: str, vocab_size: int, special_tokens: list[str],
                    normalizer, pre_tokenizer, decoder=None) -> Tokenizer:
    """Train a word-level or BPE tokenizer on `texts`; special tokens get ids 0, 1, ... in order.

    `vocab_size` counts the special tokens. Out-of-vocabulary words map to "<unk>".
    """
    check_choice("dataset.tokenizer", kind, TOKENIZERS)
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=special_tokens)
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                      min_frequency=2, show_progress=False)
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    if decoder is not None:
        tok.decoder = decoder
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    for i, special in enumerate(special_tokens):
        assert tok.token_to_id(special) == i, f"special token {special} did not get id {i}"
    return tok


def review_tokenizer_parts():
    """IMDB: strip `<br />` markup, NFKC, lowercase; split into words and punctuation runs."""
    normalizer = normalizers.Sequence([normalizers.Replace("<br />", " "), normalizers.NFKC(),
                                       normalizers.Lowercase()])
    return normalizer, pre_tokenizers.Whitespace(), None


def sentence_tokenizer_parts():
    """Multi30k: NFKC, case kept; Metaspace marks word starts so decoding restores spaces."""
    return normalizers.NFKC(), pre_tokenizers.Metaspace(), decoders.Metaspace()


def encode_padded(tok: Tokenizer, texts: list[str], max_len: int, pad_id: int,
                  prefix: list[int] = (), suffix: list[int] = (),
                  truncate: str = "head", id_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [N, L] (right-padded with `pad_id`) and lengths [N].

    Each row is prefix + (ids + id_offset) + suffix, with ids truncated so the row fits in
    `max_len` (`truncate="head"` keeps the first tokens, "tail" the last); L is the longest row
    (at most `max_len`).
    """
    check_choice("dataset.truncate", truncate, TRUNCATE)
    room = max_len - len(prefix) - len(suffix)
    if room <= 0:
        raise ValueError(f"dataset.max_len={max_len} leaves no room for tokens")
    # Truncating inside `tokenizers` keeps the Python objects small; the fast path skips offsets.
    tok.enable_truncation(room, direction="right" if truncate == "head" else "left")
    try:
        encodings = getattr(tok, "encode_batch_fast", tok.encode_batch)(texts)
    finally:
        tok.no_truncation()
    rows = [list(prefix) + [i + id_offset for i in e.ids] + list(suffix) for e in encodings]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if len(rows) else 0
    out = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    return out.reshape(len(rows), width), lengths
