"""IMDB and Multi30k loaders on tiny files written in the official formats."""
import gzip
import json
import math
import io
import random
import tarfile

import pytest
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer

import data.imdb as imdb
import data.multi30k as multi30k
from data import load_data

CPU = torch.device("cpu")
POS = ["great", "wonderful", "superb", "moving", "brilliant"]
NEG = ["awful", "boring", "terrible", "dull", "clumsy"]
FILLER = ["the", "plot", "actors", "film", "story", "ending", "music", "scenes"]
TEST_ONLY, TRAIN_ONLY = "zyxwvqk", "trainonlyword"


def review(rng, label, split):
    words = [rng.choice(POS if label == "pos" else NEG) for _ in range(3)] + rng.sample(FILLER, 4)
    rng.shuffle(words)
    extra = TEST_ONLY if split == "test" else TRAIN_ONLY
    # Control characters and markup occur in the real reviews.
    return f"This movie: {' '.join(words)}.<br /><br />{extra} {extra}\u0085 {' '.join(words[:2])}!"


def imdb_files(n_per_class=20):
    rng = random.Random(0)
    return {f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt": review(rng, label, split)
            for split in ("train", "test") for label in ("pos", "neg") for i in range(n_per_class)}


def write_tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))


def write_tarball(path, files):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            blob = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def data_cfg(tmp_path, root):
    return OmegaConf.create({"root": str(root), "cache": str(tmp_path / "cache"), "download": False})


def load_imdb(tmp_path, root, **options):
    cfg = OmegaConf.create({"name": "imdb", "vocab_size": 60, "max_len": 32, **options})
    return load_data(cfg, data_cfg(tmp_path, root), CPU)


@pytest.fixture
def imdb_tree(tmp_path):
    write_tree(tmp_path / "root" / "imdb", imdb_files())
    return tmp_path / "root"


def test_imdb_shapes_splits_and_labels(tmp_path, imdb_tree):
    b = load_imdb(tmp_path, imdb_tree, val_fraction=0.25)
    assert (len(b.train), len(b.val), len(b.test)) == (30, 10, 40)
    assert b.info == {"vocab_size": b.info["vocab_size"], "pad_id": 0, "unk_id": 1, "num_classes": 2,
                      "n_train": 30, "max_len": 32}
    (tokens, lengths), y = b.train.take(torch.arange(len(b.train)))
    assert tokens.dtype == lengths.dtype == y.dtype == torch.long and tokens.shape[1] <= 32
    assert torch.bincount(y).tolist() == [15, 15] and torch.bincount(b.val.target).tolist() == [5, 5]
    assert torch.bincount(b.test.target).tolist() == [20, 20]
    positions = torch.arange(tokens.shape[1])
    assert ((tokens != 0) == (positions < lengths[:, None])).all()  # right padding with 0 only
    assert b.splits["split_seed"] == 42 and b.splits["n_val"] == 10


def test_imdb_word_vocab_from_training_text_only(tmp_path, imdb_tree):
    b = load_imdb(tmp_path, imdb_tree, tokenizer="word")
    tok = Tokenizer.from_file(b.splits["tokenizer_file"])
    vocab = tok.get_vocab()
    assert TRAIN_ONLY in vocab and TEST_ONLY not in vocab and "br" not in vocab
    assert tok.encode("This movie").ids == [vocab["this"], vocab["movie"]]
    assert (b.test.inputs[0] == 1).any()  # the test-only word became <unk>


def test_imdb_bpe_learns_no_merge_from_test_text(tmp_path, imdb_tree):
    b = load_imdb(tmp_path, imdb_tree, tokenizer="bpe", vocab_size=120)
    vocab = Tokenizer.from_file(b.splits["tokenizer_file"]).get_vocab()
    assert TRAIN_ONLY in vocab  # frequent training words do get merged
    assert not any(len(t) > 1 and t in TEST_ONLY for t in vocab)


def test_imdb_tarball_matches_tree(tmp_path, imdb_tree):
    tar_root = tmp_path / "tar_root"
    write_tarball(tar_root / "imdb" / "aclImdb_labeled.tar.gz", imdb_files())
    a, b = load_imdb(tmp_path, imdb_tree), load_imdb(tmp_path, tar_root)
    assert b.splits["source"].endswith("aclImdb_labeled.tar.gz")
    for x, y in zip(a.train.inputs + a.test.inputs, b.train.inputs + b.test.inputs):
        assert torch.equal(x, y)
    assert not (tar_root / "imdb" / "aclImdb").exists()  # read in place, not unpacked


def test_imdb_truncates_and_caches(tmp_path, imdb_tree, monkeypatch):
    first = load_imdb(tmp_path, imdb_tree, max_len=5)
    assert first.train.inputs[0].shape[1] == 5 and (first.train.inputs[1] == 5).all()
    monkeypatch.setattr(imdb, "read_reviews", lambda source: pytest.fail("cache was not used"))
    second = load_imdb(tmp_path, imdb_tree, max_len=5)
    assert torch.equal(first.test.inputs[0], second.test.inputs[0])


def test_imdb_tail_truncation_keeps_the_last_tokens(tmp_path, imdb_tree):
    full = load_imdb(tmp_path, imdb_tree, max_len=64)
    tail = load_imdb(tmp_path, imdb_tree, max_len=5, truncate="tail")
    (tokens, lengths), (short, short_len) = full.test.inputs, tail.test.inputs
    assert (lengths > 5).all() and (short_len == 5).all()
    for row, n, got in zip(tokens, lengths.tolist(), short):
        assert got.tolist() == row[n - 5:n].tolist()
    with pytest.raises(ValueError, match="dataset.truncate='middle'.*tail"):
        load_imdb(tmp_path, imdb_tree, truncate="middle")


def test_imdb_fraction_is_stratified(tmp_path, imdb_tree):
    full = load_imdb(tmp_path, imdb_tree, val_fraction=0.0)
    part = load_imdb(tmp_path, imdb_tree, val_fraction=0.0, fraction=0.25)
    assert full.val is None and torch.bincount(part.train.target).tolist() == [5, 5]
    assert part.info["n_train"] == 10 and len(part.test) == 40


def test_imdb_test_fraction_is_a_stratified_subset_of_the_test_reviews(tmp_path, imdb_tree):
    full = load_imdb(tmp_path, imdb_tree, val_fraction=0.0)
    part = load_imdb(tmp_path, imdb_tree, val_fraction=0.0, test_fraction=0.25)
    assert torch.bincount(part.test.target).tolist() == [5, 5] and len(part.train) == len(full.train)
    (full_tokens, _), _ = full.test.take(torch.arange(len(full.test)))
    (part_tokens, _), _ = part.test.take(torch.arange(len(part.test)))
    rows = {tuple(r) for r in full_tokens.tolist()}
    assert all(tuple(r) in rows for r in part_tokens.tolist())      # a subset, not new reviews
    with pytest.raises(ValueError, match="dataset.test_fraction=0"):
        load_imdb(tmp_path, imdb_tree, test_fraction=0.0)


def test_imdb_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_imdb(tmp_path, tmp_path / "empty")
    msg = str(err.value)
    assert "aclImdb_labeled.tar.gz" in msg and str(tmp_path / "empty" / "imdb") in msg and "data.root=" in msg


def test_imdb_rejects_bad_tokenizer(tmp_path, imdb_tree):
    with pytest.raises(ValueError, match="dataset.tokenizer='chars'.*word"):
        load_imdb(tmp_path, imdb_tree, tokenizer="chars")


EN = ["a man", "a woman", "two dogs", "a child", "the girl"]
VERB = ["rides a bike", "plays in the park", "eats an apple", "runs on the beach"]
DE = {"a man": "ein Mann", "a woman": "eine Frau", "two dogs": "zwei Hunde", "a child": "ein Kind",
      "the girl": "das Mädchen", "rides a bike": "fährt Fahrrad", "plays in the park": "spielt im Park",
      "eats an apple": "isst einen Apfel", "runs on the beach": "läuft am Strand"}


def write_multi30k(root, gz=True, sizes=(40, 6, 5)):
    rng = random.Random(1)
    directory = root / "multi30k"
    directory.mkdir(parents=True, exist_ok=True)
    pairs = {}
    for split, n in zip(("train", "val", "test_2016_flickr"), sizes):
        subj = [rng.choice(EN) for _ in range(n)]
        verb = [rng.choice(VERB) for _ in range(n)]
        en = [f"{s.capitalize()} {v}." for s, v in zip(subj, verb)]
        de = [f"{DE[s].capitalize()} {DE[v]}." for s, v in zip(subj, verb)]
        if split == "test_2016_flickr":
            en[0], de[0] = f"{TEST_ONLY} {TEST_ONLY} {TEST_ONLY}.", f"{TEST_ONLY} {TEST_ONLY}."
        pairs[split] = (en, de)
        for lang, lines in (("en", en), ("de", de)):
            blob = ("\n".join(lines) + "\n").encode("utf-8")
            if gz:
                (directory / f"{split}.{lang}.gz").write_bytes(gzip.compress(blob))
            else:
                (directory / f"{split}.{lang}").write_bytes(blob)
    return pairs


def load_m30k(tmp_path, root, **options):
    cfg = OmegaConf.create({"name": "multi30k", "vocab_size": 80, **options})
    return load_data(cfg, data_cfg(tmp_path, root), CPU)


def test_multi30k_teacher_forcing_layout(tmp_path):
    pairs = write_multi30k(tmp_path / "root")
    b = load_m30k(tmp_path, tmp_path / "root")
    assert b.task == "seq2seq" and (len(b.train), len(b.val), len(b.test)) == (40, 6, 5)
    assert b.info["pad_id"] == 0 and b.info["n_train"] == 40
    (src, tgt_in), tgt_out = b.train.take(torch.arange(40))
    assert src.dtype == tgt_in.dtype == tgt_out.dtype == torch.long and tgt_in.shape == tgt_out.shape
    pad, bos, eos = 0, b.info["bos_id"], b.info["eos_id"]
    assert (tgt_in[:, 0] == bos).all() and ((tgt_out == eos).sum(1) == 1).all() and ((src == eos).sum(1) == 1).all()
    shifted = tgt_out[:, :-1] != eos
    assert torch.equal(tgt_in[:, 1:][shifted], tgt_out[:, :-1][shifted])
    assert (tgt_in[:, 1:][~shifted] == pad).all() and (tgt_in != eos).all()
    de_tok = Tokenizer.from_file(b.splits["tokenizer_files"][1])
    decoded = [de_tok.decode([t for t in row.tolist() if t > 3]) for row in tgt_out]
    assert decoded == pairs["train"][1]
    assert b.info["src_vocab_size"] <= 80 and b.info["tgt_vocab_size"] <= 80


def test_multi30k_bpe_trained_on_training_text_only(tmp_path):
    write_multi30k(tmp_path / "root")
    b = load_m30k(tmp_path, tmp_path / "root")
    for path in b.splits["tokenizer_files"]:
        vocab = Tokenizer.from_file(path).get_vocab()
        assert not any(len(t.lstrip("\u2581")) > 1 and t.lstrip("\u2581") in TEST_ONLY for t in vocab)
    en_vocab = Tokenizer.from_file(b.splits["tokenizer_files"][0]).get_vocab()
    assert "\u2581man" in en_vocab  # frequent training words are merged
    assert (b.test.inputs[0][0] == 1).any()  # characters never seen in training are <unk>


def test_multi30k_plain_files_cache_and_fraction(tmp_path, monkeypatch):
    write_multi30k(tmp_path / "root", gz=False)
    first = load_m30k(tmp_path, tmp_path / "root", joint_vocab=True)
    assert first.info["src_vocab_size"] == first.info["tgt_vocab_size"]
    monkeypatch.setattr(multi30k, "read_lines", lambda path: pytest.fail("cache was not used"))
    part = load_m30k(tmp_path, tmp_path / "root", joint_vocab=True, fraction=0.25)
    assert len(part.train) == 10 and torch.equal(first.test.target, part.test.target)


def test_multi30k_missing_files_named(tmp_path):
    write_multi30k(tmp_path / "root")
    (tmp_path / "root" / "multi30k" / "test_2016_flickr.de.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_m30k(tmp_path, tmp_path / "root")
    msg = str(err.value)
    assert "test_2016_flickr.de.gz" in msg and "train.en" not in msg
    assert str(tmp_path / "root" / "multi30k") in msg and "data.root=" in msg


def test_dataset_yaml_files_match_schemas():
    """Composed as a run composes them (nci1 / reddit_binary are presets of dataset=tu)."""
    from data import validate_dataset_config
    from tests.helpers import compose_config
    for name in ("imdb", "multi30k", "cifar10", "cifar100", "nci1", "reddit_binary", "tu"):
        cfg = compose_config(f"dataset={name}").dataset
        assert cfg.name == name
        validate_dataset_config(cfg)  # raises on unknown keys or wrong types


# ---------------------------------------------------------------- GPT-2 byte-level BPE, local files

GPT2_MERGES = ["Ġ m", "Ġm a", "Ġma n", "Ġ a", "i n", "Ġ in"]


def write_gpt2(directory):
    """A tiny GPT-2-format tokenizer: the 256 byte symbols, a few merges, <|endoftext|>."""
    from tokenizers import pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merged = ["".join(m.split()) for m in GPT2_MERGES]
    vocab = {t: i for i, t in enumerate(alphabet + merged + ["<|endoftext|>"])}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(GPT2_MERGES) + "\n",
                                          encoding="utf-8")
    return vocab


def test_multi30k_gpt2_tokenizer_from_local_files(tmp_path):
    from tokenizers.implementations import ByteLevelBPETokenizer
    pairs = write_multi30k(tmp_path / "root")
    vocab = write_gpt2(tmp_path / "root" / "gpt2")
    b = load_m30k(tmp_path, tmp_path / "root", tokenizer="gpt2")
    assert b.splits["tokenizer"] == "gpt2" and b.info["src_vocab_size"] == len(vocab) + 4
    assert b.info["tgt_vocab_size"] == len(vocab) + 4
    reference = ByteLevelBPETokenizer(str(tmp_path / "root" / "gpt2" / "vocab.json"),
                                      str(tmp_path / "root" / "gpt2" / "merges.txt"))
    (src, tgt_in), tgt_out = b.train.take(torch.arange(len(b.train)))
    for row, en in zip(src, pairs["train"][0]):
        ids = [t - 4 for t in row.tolist() if t > 3]               # GPT-2 id i is stored as i + 4
        assert ids == reference.encode(en).ids and reference.decode(ids) == en
    assert vocab["Ġman"] + 4 in src.tolist()[pairs["train"][0].index(next(
        s for s in pairs["train"][0] if " man" in s))]
    for row, de in zip(tgt_out, pairs["train"][1]):                 # German: bytes, no <unk>
        assert reference.decode([t - 4 for t in row.tolist() if t > 3]) == de
    assert not (src == 1).any() and not (tgt_out == 1).any()


def test_multi30k_gpt2_missing_files_is_one_clear_line(tmp_path):
    write_multi30k(tmp_path / "root")
    with pytest.raises(FileNotFoundError) as err:
        load_m30k(tmp_path, tmp_path / "root", tokenizer="gpt2")
    msg = str(err.value)
    assert "\n" not in msg and "vocab.json and merges.txt" in msg
    assert str(tmp_path / "root" / "gpt2") in msg and "dataset.gpt2_dir=" in msg
    write_gpt2(tmp_path / "mine")
    (tmp_path / "mine" / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing merges.txt in .*mine"):
        load_m30k(tmp_path, tmp_path / "root", tokenizer="gpt2", gpt2_dir=str(tmp_path / "mine"))


def test_multi30k_records_tokenizer_and_refuses_unknown_one(tmp_path):
    write_multi30k(tmp_path / "root")
    assert load_m30k(tmp_path, tmp_path / "root").splits["tokenizer"] == "bpe80-per-language"
    assert load_m30k(tmp_path, tmp_path / "root",
                     joint_vocab=True).splits["tokenizer"] == "bpe80-joint"
    with pytest.raises(ValueError, match="dataset.tokenizer='gpt3'.*gpt2"):
        load_m30k(tmp_path, tmp_path / "root", tokenizer="gpt3")


def test_multi30k_records_the_unigram_baseline_in_its_token_unit(tmp_path):
    write_multi30k(tmp_path / "root")
    b = load_m30k(tmp_path, tmp_path / "root")
    train, test, vocab = b.train.target, b.test.target, b.info["tgt_vocab_size"]
    counts = {t: 1 for t in range(vocab)}                       # add-one smoothing, by hand
    for t in train.flatten().tolist():
        if t != 0:
            counts[t] += 1
    total = sum(counts.values())
    want = [-math.log(counts[t] / total) for t in test.flatten().tolist() if t != 0]
    assert b.splits["unigram_test_loss"] == pytest.approx(sum(want) / len(want), rel=1e-9)
