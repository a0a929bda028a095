"""IMDB movie reviews (Maas et al. 2011, aclImdb): binary sentiment, 25k train / 25k test.

Accepted sources under data.root, first match wins: the unpacked `imdb/aclImdb/` or `aclImdb/`
directory, or the tarball `imdb/aclImdb_labeled.tar.gz` / `imdb/aclImdb_v1.tar.gz` read in place.
The tokenizer is trained on the training part only (the official train set minus the
validation holdout); token tensors are cached under data.cache.
"""
from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

from data.tensors import DataBundle, TensorSplit, stratified_indices, stratified_split
from data.text import (TOKENIZERS, TRUNCATE, atomic_write, cache_key, cached, check_choice, download,
                       encode_padded, missing_files_error, review_tokenizer_parts, train_tokenizer)

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
TARBALLS = ("aclImdb_labeled.tar.gz", "aclImdb_v1.tar.gz")
LABELS = {"neg": 0, "pos": 1}
SPECIALS = ["<pad>", "<unk>"]  # pad = 0, unk = 1
_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


@dataclass
class IMDBConfig:
    name: str = "imdb"
    fraction: float = 1.0       # stratified share of the training part kept (NB 5% IMDB: 0.05)
    test_fraction: float = 1.0  # stratified share of the 25k test reviews evaluated (quick profiles: 0.2)
    split_seed: int = 42        # validation holdout and `fraction` subsample
    val_fraction: float = 0.1   # stratified holdout of the official train set
    tokenizer: str = "word"     # word | bpe
    vocab_size: int = 20000     # including <pad> and <unk>
    max_len: int = 256          # tokens kept per review (the rest is truncated)
    truncate: str = "head"      # head: keep the first max_len tokens; tail: keep the last ones


def find_source(root: Path, allow_download: bool) -> Path:
    """The aclImdb directory or tarball to read, downloading the official tarball if allowed."""
    for d in (root / "imdb" / "aclImdb", root / "aclImdb"):
        if (d / "train").is_dir() and (d / "test").is_dir():
            return d
    for name in TARBALLS:
        if (root / "imdb" / name).is_file():
            return root / "imdb" / name
    if allow_download:
        return download(URL, root / "imdb" / TARBALLS[1])
    raise missing_files_error(
        "imdb", root / "imdb",
        [f"{TARBALLS[0]} or {TARBALLS[1]} (tarball), or",
         "aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt (unpacked)"], root)


def read_reviews(source: Path) -> dict[str, tuple[list[str], list[int]]]:
    """{"train"|"test": (texts, labels)}, ordered by (label, id) for determinism."""
    rows = {"train": [], "test": []}
    if source.is_dir():
        for split in rows:
            for label in LABELS:
                for f in (source / split / label).glob("*.txt"):
                    rows[split].append((LABELS[label], int(f.name.split("_")[0]),
                                        f.read_bytes().decode("utf-8")))
    else:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                m = _MEMBER.search(member.name)
                if m and member.isfile():
                    text = tar.extractfile(member).read().decode("utf-8")
                    rows[m.group(1)].append((LABELS[m.group(2)], int(m.group(3)), text))
    for split, items in rows.items():
        if not items:
            raise FileNotFoundError(f"imdb: no {split} reviews found in {source} "
                                    f"(expected aclImdb/{split}/{{pos,neg}}/<id>_<rating>.txt)")
        items.sort(key=lambda r: (r[0], r[1]))
    return {s: ([r[2] for r in items], [r[0] for r in items]) for s, items in rows.items()}


def _process(source: Path, cfg: IMDBConfig, tokenizer_path: Path) -> dict:
    reviews = read_reviews(source)
    train_texts, train_labels = reviews["train"]
    labels = torch.tensor(train_labels, dtype=torch.long)
    train_idx, val_idx = stratified_split(labels, cfg.val_fraction, cfg.split_seed)
    tok = train_tokenizer([train_texts[i] for i in train_idx.tolist()], cfg.tokenizer,
                          cfg.vocab_size, SPECIALS, *review_tokenizer_parts())
    atomic_write(tokenizer_path, tok.save)
    out = {"train_idx": train_idx, "val_idx": val_idx, "vocab_size": tok.get_vocab_size()}
    for split, (texts, split_labels) in reviews.items():
        tokens, lengths = encode_padded(tok, texts, cfg.max_len, pad_id=0, truncate=cfg.truncate)
        out[split] = (tokens, lengths, torch.tensor(split_labels, dtype=torch.long))
    return out


def load(cfg: IMDBConfig, data_cfg, device) -> DataBundle:
    check_choice("dataset.tokenizer", cfg.tokenizer, TOKENIZERS)
    check_choice("dataset.truncate", cfg.truncate, TRUNCATE)
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction={cfg.val_fraction}: must be in [0, 1)")
    if not 0.0 < cfg.test_fraction <= 1.0:
        raise ValueError(f"dataset.test_fraction={cfg.test_fraction}: must be in (0, 1]")
    if cfg.vocab_size <= len(SPECIALS) or cfg.max_len < 1:
        raise ValueError(f"dataset.vocab_size={cfg.vocab_size}, dataset.max_len={cfg.max_len}: "
                         f"need vocab_size > {len(SPECIALS)} and max_len >= 1")
    source = find_source(Path(data_cfg.root), bool(data_cfg.download))
    # Options at their old defaults stay out of the key, so existing caches stay valid.
    extra = {} if cfg.truncate == "head" else {"truncate": cfg.truncate}
    key = cache_key(source=str(source.resolve()), tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size,
                    max_len=cfg.max_len, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed,
                    **extra)
    cache_file = Path(data_cfg.cache) / "imdb" / f"{key}.pt"
    tokenizer_file = cache_file.with_suffix(".tokenizer.json")
    t = cached(cache_file, lambda: _process(source, cfg, tokenizer_file))

    tokens, lengths, labels = t["train"]
    train_idx = t["train_idx"]
    train_idx = train_idx[stratified_indices(labels[train_idx], cfg.fraction, cfg.split_seed)]
    split = lambda idx: TensorSplit((tokens[idx], lengths[idx]), labels[idx]).to(device)
    train = split(train_idx)
    val = split(t["val_idx"]) if len(t["val_idx"]) else None
    test_tokens, test_lengths, test_labels = t["test"]
    test_idx = stratified_indices(test_labels, cfg.test_fraction, cfg.split_seed)
    test = TensorSplit((test_tokens[test_idx], test_lengths[test_idx]), test_labels[test_idx]).to(device)
    return DataBundle(
        train=train, val=val, test=test, task="classification",
        info={"vocab_size": t["vocab_size"], "pad_id": 0, "unk_id": 1, "num_classes": 2,
              "n_train": len(train), "max_len": cfg.max_len},
        splits={"source": str(source), "cache_file": str(cache_file),
                "tokenizer_file": str(tokenizer_file), "val_fraction": cfg.val_fraction,
                "split_seed": cfg.split_seed, "fraction": cfg.fraction, "n_train": len(train),
                "n_val": 0 if val is None else len(val), "n_test": len(test)})
