"""Multi30k task 1, English -> German (Elliott et al. 2016): 29000 / 1014 / 1000 sentence pairs.

Raw files `<data.root>/multi30k/{train,val,test_2016_flickr}.{en,de}` (gzipped or plain).
Tokenizers (`dataset.tokenizer`):
- `bpe` (default): one BPE per language (or one joint BPE with `joint_vocab`), trained on the
  training text only with `tokenizers`.
- `gpt2`: GPT-2's byte-level BPE, the AWNN paper's tokenizer (so losses are per GPT-2 token, as
  the paper's 1.43), read from local files `vocab.json` + `merges.txt` in `dataset.gpt2_dir`
  (default `<data.root>/gpt2`); nothing is downloaded. GPT-2 token i gets id i + 4.
Special tokens: <pad>=0, <unk>=1, <bos>=2, <eos>=3. `splits["tokenizer"]` names the tokenizer
that produced a run's numbers.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from data.tensors import DataBundle, TensorSplit, stratified_indices
from data.text import (atomic_write, cache_key, check_choice, cached, download, encode_padded,
                       missing_files_error, sentence_tokenizer_parts, train_tokenizer)

URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{file}"
SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}
SRC, TGT = "en", "de"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
PAD, UNK, BOS, EOS = range(4)
TOKENIZERS = ("bpe", "gpt2")
GPT2_FILES = ("vocab.json", "merges.txt")


@dataclass
class Multi30kConfig:
    name: str = "multi30k"
    fraction: float = 1.0      # stratification is meaningless here: a seeded random subset
    split_seed: int = 42       # only used by `fraction`
    tokenizer: str = "bpe"     # bpe: trained on the training text | gpt2: GPT-2's BPE, local files
    vocab_size: int = 8000     # bpe: per tokenizer, special tokens included (gpt2: fixed, 50257 + 4)
    joint_vocab: bool = False  # bpe: one tokenizer for both languages (src and tgt vocab equal)
    max_len: int = 128         # tokens per sentence including <bos>/<eos>; longer ones truncated
    gpt2_dir: str = ""         # gpt2: folder with vocab.json + merges.txt ("" = <data.root>/gpt2)


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


def gpt2_files(cfg: Multi30kConfig, root: Path) -> tuple[Path, Path]:
    """GPT-2's vocab.json and merges.txt from dataset.gpt2_dir (default <data.root>/gpt2)."""
    directory = Path(cfg.gpt2_dir) if cfg.gpt2_dir else root / "gpt2"
    paths = tuple(directory / name for name in GPT2_FILES)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset.tokenizer=gpt2: missing {' and '.join(missing)} in {directory}; put GPT-2's "
            f"{' + '.join(GPT2_FILES)} there or set dataset.gpt2_dir=<folder with them> "
            f"(nothing is downloaded)")
    return paths


def gpt2_tokenizer(vocab: Path, merges: Path) -> Tokenizer:
    """GPT-2's byte-level BPE, built as `tokenizers`' ByteLevelBPETokenizer builds it."""
    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _tokenizers(cfg: Multi30kConfig, text: dict, gpt2: tuple[Path, Path] | None) -> dict:
    if gpt2 is not None:
        shared = gpt2_tokenizer(*gpt2)
        return {SRC: shared, TGT: shared}
    train = lambda *langs: [line for lang in langs for line in text["train", lang]]
    if cfg.joint_vocab:
        joint = train_tokenizer(train(SRC, TGT), "bpe", cfg.vocab_size, SPECIALS, *sentence_tokenizer_parts())
        return {SRC: joint, TGT: joint}
    return {lang: train_tokenizer(train(lang), "bpe", cfg.vocab_size, SPECIALS, *sentence_tokenizer_parts())
            for lang in (SRC, TGT)}


def tokenizer_name(cfg: Multi30kConfig) -> str:
    """What a table prints next to a loss: the unit the loss is averaged over."""
    if cfg.tokenizer == "gpt2":
        return "gpt2"
    return f"bpe{cfg.vocab_size}-{'joint' if cfg.joint_vocab else 'per-language'}"


def _process(files: dict, cfg: Multi30kConfig, tokenizer_stem: Path,
             gpt2: tuple[Path, Path] | None) -> dict:
    text = {k: read_lines(p) for k, p in files.items()}
    for split in SPLITS:
        if len(text[split, SRC]) != len(text[split, TGT]):
            raise ValueError(f"multi30k {split}: {len(text[split, SRC])} {SRC} lines but "
                             f"{len(text[split, TGT])} {TGT} lines in {files[split, SRC].parent}")
    tok = _tokenizers(cfg, text, gpt2)
    # GPT-2's ids move up by len(SPECIALS) so that ours keep ids 0-3 (byte-level BPE has no <unk>).
    offset = len(SPECIALS) if gpt2 is not None else 0
    for lang, t in tok.items():
        atomic_write(Path(f"{tokenizer_stem}.{lang}.json"), t.save)
    out = {"src_vocab_size": tok[SRC].get_vocab_size() + offset,
           "tgt_vocab_size": tok[TGT].get_vocab_size() + offset}
    for split in SPLITS:
        src, _ = encode_padded(tok[SRC], text[split, SRC], cfg.max_len, PAD, suffix=[EOS],
                               id_offset=offset)
        tgt, _ = encode_padded(tok[TGT], text[split, TGT], cfg.max_len, PAD, prefix=[BOS],
                               suffix=[EOS], id_offset=offset)
        # Teacher forcing: the decoder reads <bos> y and predicts y <eos>.
        tgt_in = tgt[:, :-1].masked_fill(tgt[:, :-1] == EOS, PAD)
        out[split] = (src, tgt_in, tgt[:, 1:])
    return out


def unigram_loss(train_targets: torch.Tensor, test_targets: torch.Tensor, vocab_size: int) -> float:
    """Test cross-entropy (nats per token) of a unigram model of the training targets, add-one
    smoothed: the floor a translation model must clearly beat, in the same token unit."""
    counts = torch.bincount(train_targets[train_targets != PAD], minlength=vocab_size).double() + 1
    log_p = (counts / counts.sum()).log()
    return float(-log_p[test_targets[test_targets != PAD]].mean())


def load(cfg: Multi30kConfig, data_cfg, device) -> DataBundle:
    check_choice("dataset.tokenizer", cfg.tokenizer, TOKENIZERS)
    if cfg.vocab_size <= len(SPECIALS) or cfg.max_len < 3:
        raise ValueError(f"dataset.vocab_size={cfg.vocab_size}, dataset.max_len={cfg.max_len}: "
                         f"need vocab_size > {len(SPECIALS)} and max_len >= 3")
    root = Path(data_cfg.root)
    gpt2 = gpt2_files(cfg, root) if cfg.tokenizer == "gpt2" else None
    files = find_files(root, bool(data_cfg.download))
    # The default (bpe) key is the one used before `tokenizer` existed, so old caches stay valid.
    options = {"vocab_size": cfg.vocab_size, "joint_vocab": cfg.joint_vocab}
    if gpt2 is not None:
        options = {"tokenizer": "gpt2", "gpt2": [cache_key(path=str(p.resolve()), size=p.stat().st_size,
                                                           mtime=p.stat().st_mtime_ns) for p in gpt2]}
    key = cache_key(files=sorted(str(p.resolve()) for p in files.values()), max_len=cfg.max_len,
                    **options)
    cache_file = Path(data_cfg.cache) / "multi30k" / f"{key}.pt"
    stem = cache_file.with_suffix("")
    t = cached(cache_file, lambda: _process(files, cfg, stem, gpt2))

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
                "tokenizer": tokenizer_name(cfg),
                "unigram_test_loss": unigram_loss(tgt_out[keep], t["test"][2], t["tgt_vocab_size"]),
                "gpt2_files": [str(p) for p in gpt2] if gpt2 is not None else None,
                "cache_file": str(cache_file), "tokenizer_files": [f"{stem}.{SRC}.json", f"{stem}.{TGT}.json"],
                "fraction": cfg.fraction, "split_seed": cfg.split_seed,
                "n_train": len(train), "n_val": len(val), "n_test": len(test)})
