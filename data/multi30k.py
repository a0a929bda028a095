"""Multi30k task 1, English -> German (Elliott et al. 2016): 29000 / 1014 / 1000 sentence pairs.

Raw files `<data.root>/multi30k/{train,val,test_2016_flickr}.{en,de}` (gzipped or plain).
One BPE tokenizer per language (or one joint tokenizer with `joint_vocab`), trained on the
training text only with `tokenizers` (the AWNN paper used GPT-2's BPE, which needs a hub
download). Special tokens: <pad>=0, <unk>=1, <bos>=2, <eos>=3.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from data.tensors import DataBundle, TensorSplit, stratified_indices
from data.text import (atomic_write, cache_key, cached, download, encode_padded,
                       missing_files_error, sentence_tokenizer_parts, train_tokenizer)

URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{file}"
SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}
SRC, TGT = "en", "de"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
PAD, UNK, BOS, EOS = range(4)


@dataclass
class Multi30kConfig:
    name: str = "multi30k"
    fraction: float = 1.0      # stratification is meaningless here: a seeded random subset
    split_seed: int = 42       # only used by `fraction`
    vocab_size: int = 8000     # per tokenizer, special tokens included
    joint_vocab: bool = False  # one tokenizer for both languages (src and tgt vocab equal)
    max_len: int = 128         # tokens per sentence including <bos>/<eos>; longer ones truncated


def _path(directory: Path, split: str, lang: str) -> Path | None:
    for name in (f"{SPLITS[split]}.{lang}.gz", f"{SPLITS[split]}.{lang}"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_files(root: Path, allow_download: bool) -> dict[tuple[str, str], Path]:
    directory = root / "multi30k"
    found = {(s, lang): _path(directory, s, lang) for s in SPLITS for lang in (SRC, TGT)}
    missing = [k for k, p in found.items() if p is None]
    if missing and allow_download:
        for split, lang in missing:
            file = f"{SPLITS[split]}.{lang}.gz"
            found[split, lang] = download(URL.format(file=file), directory / file)
    elif missing:
        raise missing_files_error("multi30k", directory,
                                  [f"{SPLITS[s]}.{lang}.gz (or unzipped)" for s, lang in missing], root)
    return found


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().rstrip("\n").split("\n")


def _process(files: dict, cfg: Multi30kConfig, tokenizer_stem: Path) -> dict:
    text = {k: read_lines(p) for k, p in files.items()}
    for split in SPLITS:
        if len(text[split, SRC]) != len(text[split, TGT]):
            raise ValueError(f"multi30k {split}: {len(text[split, SRC])} {SRC} lines but "
                             f"{len(text[split, TGT])} {TGT} lines in {files[split, SRC].parent}")
    train = lambda *langs: [line for lang in langs for line in text["train", lang]]
    if cfg.joint_vocab:
        joint = train_tokenizer(train(SRC, TGT), "bpe", cfg.vocab_size, SPECIALS, *sentence_tokenizer_parts())
        tok = {SRC: joint, TGT: joint}
    else:
        tok = {lang: train_tokenizer(train(lang), "bpe", cfg.vocab_size, SPECIALS, *sentence_tokenizer_parts())
               for lang in (SRC, TGT)}
    for lang, t in tok.items():
        atomic_write(Path(f"{tokenizer_stem}.{lang}.json"), t.save)
    out = {"src_vocab_size": tok[SRC].get_vocab_size(), "tgt_vocab_size": tok[TGT].get_vocab_size()}
    for split in SPLITS:
        src, _ = encode_padded(tok[SRC], text[split, SRC], cfg.max_len, PAD, suffix=[EOS])
        tgt, _ = encode_padded(tok[TGT], text[split, TGT], cfg.max_len, PAD, prefix=[BOS], suffix=[EOS])
        # Teacher forcing: the decoder reads <bos> y and predicts y <eos>.
        tgt_in = tgt[:, :-1].masked_fill(tgt[:, :-1] == EOS, PAD)
        out[split] = (src, tgt_in, tgt[:, 1:])
    return out


def load(cfg: Multi30kConfig, data_cfg, device) -> DataBundle:
    if cfg.vocab_size <= len(SPECIALS) or cfg.max_len < 3:
        raise ValueError(f"dataset.vocab_size={cfg.vocab_size}, dataset.max_len={cfg.max_len}: "
                         f"need vocab_size > {len(SPECIALS)} and max_len >= 3")
    files = find_files(Path(data_cfg.root), bool(data_cfg.download))
    key = cache_key(files=sorted(str(p.resolve()) for p in files.values()), vocab_size=cfg.vocab_size,
                    joint_vocab=cfg.joint_vocab, max_len=cfg.max_len)
    cache_file = Path(data_cfg.cache) / "multi30k" / f"{key}.pt"
    stem = cache_file.with_suffix("")
    t = cached(cache_file, lambda: _process(files, cfg, stem))

    src, tgt_in, tgt_out = t["train"]
    # A constant label makes stratified_indices a plain seeded subset.
    keep = stratified_indices(src.new_zeros(len(src)), cfg.fraction, cfg.split_seed)
    split = lambda s, t_in, t_out: TensorSplit((s, t_in), t_out).to(device)
    train = split(src[keep], tgt_in[keep], tgt_out[keep])
    val, test = split(*t["val"]), split(*t["test"])
    return DataBundle(
        train=train, val=val, test=test, task="seq2seq",
        info={"src_vocab_size": t["src_vocab_size"], "tgt_vocab_size": t["tgt_vocab_size"],
              "pad_id": PAD, "bos_id": BOS, "eos_id": EOS, "unk_id": UNK, "n_train": len(train)},
        splits={"files": {f"{s}.{lang}": str(p) for (s, lang), p in files.items()},
                "cache_file": str(cache_file), "tokenizer_files": [f"{stem}.{SRC}.json", f"{stem}.{TGT}.json"],
                "fraction": cfg.fraction, "split_seed": cfg.split_seed,
                "n_train": len(train), "n_val": len(val), "n_test": len(test)})
