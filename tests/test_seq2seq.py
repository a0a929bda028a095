from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models import build_model, validate_model_config
from models.awnn import adaptive_modules, update_widths
from models.seq2seq import Seq2SeqTransformer

CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "seq2seq.yaml"
PAD, BOS, EOS = 0, 1, 2
V_SRC, V_TGT = 13, 11


def tiny(**kw) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    kw = {"d_model": 16, "nhead": 2, "num_encoder_layers": 2, "num_decoder_layers": 2,
          "dim_feedforward": 32, "dropout": 0.0, "adaptive": False, **kw}
    return Seq2SeqTransformer(V_SRC, V_TGT, PAD, **kw).eval()


def tokens(shape: tuple[int, int], vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


VARIANTS = [dict(), dict(adaptive=True), dict(norm_first=True),
            dict(adaptive=True, norm_first=True)]


@pytest.mark.parametrize("kw", VARIANTS)
def test_padding_and_causality(kw):
    model = tiny(**kw)
    src, tgt = tokens((3, 7), V_SRC, 0), tokens((3, 5), V_TGT, 1)
    src[0, 4:] = PAD  # a padded sentence in the batch
    tgt[:, 0] = BOS
    logits = model(src, tgt)
    assert logits.shape == (3, 5, V_TGT)

    # Appending padding to the source changes nothing.
    padded = torch.cat([src, torch.full((3, 4), PAD)], dim=1)
    torch.testing.assert_close(model(padded, tgt), logits, rtol=1e-5, atol=1e-5)
    # A padded sentence reads the same as its unpadded self.
    torch.testing.assert_close(model(src[:1, :4], tgt[:1]), logits[:1], rtol=1e-5, atol=1e-5)

    # Decoder is causal: changing target token t changes logits at >= t only.
    t = 3
    changed = tgt.clone()
    changed[:, t] = (changed[:, t] + 1 - 3) % (V_TGT - 3) + 3
    out = model(src, changed)
    torch.testing.assert_close(out[:, :t], logits[:, :t], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, t:], logits[:, t:])


def test_greedy_decode_agrees_with_forward():
    model = tiny()
    src = tokens((4, 6), V_SRC, 2)
    out = model.train().greedy_decode(src, max_len=8, bos_id=BOS, eos_id=EOS)
    assert model.training  # mode restored
    assert out.shape[0] == 4 and 2 <= out.shape[1] <= 9 and (out[:, 0] == BOS).all()
    model.eval()
    predicted = model(src, out[:, :-1]).argmax(-1)
    for row, pred in zip(out, predicted):
        ends = (row[1:] == EOS).nonzero()
        stop = int(ends[0]) + 1 if len(ends) else len(pred)
        assert torch.equal(row[1:stop + 1], pred[:stop])
        assert (row[stop + 1:] == PAD).all()


def test_adaptive_blocks():
    assert len(adaptive_modules(tiny(adaptive=True, num_encoder_layers=3))) == 5
    assert adaptive_modules(tiny()) == []


def copy_task_losses(model: Seq2SeqTransformer, steps: int) -> tuple[list[float], bool]:
    """Learn to copy 8 fixed source sentences; the loss ignores target padding."""
    src = tokens((8, 6), V_SRC, 3) % V_TGT
    src[src < 3] += 3
    tgt_in = torch.cat([torch.full((8, 1), BOS), src], dim=1)
    tgt_out = torch.cat([src, torch.full((8, 1), EOS)], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses, resized = [], False
    for _ in range(steps):
        optimizer.zero_grad()
        logits = model(src, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(),
                                                 ignore_index=PAD)
        loss.backward()
        optimizer.step()
        resized |= update_widths(model, optimizer)
        losses.append(loss.item())
        # A graph kept alive across a capacity growth in update_widths breaks the next
        # backward (stale AccumulateGrad shape): drop it, as a training loop must.
        del loss, logits
    model.eval()
    assert torch.isfinite(model(src, tgt_in)).all()
    return losses, resized


@pytest.mark.parametrize("adaptive", [False, True])
def test_overfits_a_tiny_batch(adaptive):
    losses, resized = copy_task_losses(tiny(adaptive=adaptive, norm_first=True), steps=60)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
    assert resized == adaptive  # update_widths did resize during training


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="divisible"):
        tiny(d_model=18, nhead=4)
    with pytest.raises(ValueError, match="share_embeddings"):
        tiny(share_embeddings=True)
    with pytest.raises(ValueError, match="relu6"):
        tiny(activation="gelu")


def test_shared_embeddings_are_one_matrix():
    model = Seq2SeqTransformer(V_TGT, V_TGT, PAD, d_model=16, nhead=2, num_encoder_layers=1,
                               num_decoder_layers=1, adaptive=False, share_embeddings=True)
    assert model.src_embed.weight is model.tgt_embed.weight is model.generator.weight


def test_builds_from_the_real_config():
    cfg = validate_model_config(OmegaConf.load(CONF))
    assert (cfg.d_model, cfg.nhead, cfg.num_encoder_layers, cfg.nu0) == (512, 8, 6, 0.004)
    cfg.d_model, cfg.num_encoder_layers, cfg.num_decoder_layers = 16, 1, 2
    model = build_model(cfg, {"src_vocab_size": V_SRC, "tgt_vocab_size": V_TGT, "pad_id": PAD})
    assert len(adaptive_modules(model)) == 3
    assert model.eval()(tokens((2, 4), V_SRC, 0), tokens((2, 3), V_TGT, 1)).shape == (2, 3, V_TGT)


@pytest.mark.parametrize("kw", VARIANTS)
def test_forward_cuts_padding_columns_without_changing_real_positions(kw):
    model = tiny(**kw)
    src, tgt = tokens((3, 9), V_SRC, 3), tokens((3, 8), V_TGT, 4)
    tgt[:, 0] = BOS
    src[:, 6:] = PAD                      # the batch's last 3 source columns are all padding
    src[1, 3:] = PAD
    tgt[:, 5:] = PAD                      # and its last 3 target columns
    tgt[2, 2:] = PAD
    memory, src_pad = model.encode(src)   # the uncut computation, as a reference
    full = model.decode(tgt, memory, src_pad)
    out = model(src, tgt)
    assert out.shape == full.shape
    real = tgt != PAD
    torch.testing.assert_close(out[real], full[real], rtol=1e-5, atol=1e-5)
    assert not out[:, 5:].any()           # cut columns come back as zeros (ignored by the loss)
