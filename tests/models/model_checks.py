"""Checks of the forward contract (:class:`lmforge.interfaces.CausalLM`) that every
architecture must pass; the dense and moe tests share them."""

from __future__ import annotations

import torch


def check_left_padding(model: torch.nn.Module) -> None:
    """Rows of different lengths, left-padded with junk ids: each row's real-token logits equal
    those of the row run alone, without padding."""
    g = torch.Generator().manual_seed(5)
    lengths, t = [11, 6, 1], 11
    seqs = [torch.randint(0, model.vocab_size, (n,), generator=g) for n in lengths]
    ids = torch.randint(0, model.vocab_size, (len(seqs), t), generator=g)  # junk in the padding
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, t - len(s):] = s
        mask[i, t - len(s):] = 1
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        other_junk = ids.masked_fill(mask == 0, 3)
        padded2 = model(other_junk, attention_mask=mask).logits
        for i, s in enumerate(seqs):
            alone = model(s[None]).logits[0]
            real = padded[i, t - len(s):]
            assert (real - alone).abs().max().item() <= 1e-5, i
            # what the padding holds never matters
            assert (padded2[i, t - len(s):] - real).abs().max().item() <= 1e-5, i
    # and the mask is not a no-op: without it the padded row's logits differ
    with torch.no_grad():
        unmasked = model(ids).logits
    assert (unmasked[1, t - lengths[1]:] - padded[1, t - lengths[1]:]).abs().max() > 1e-3


def check_explicit_positions(model: torch.nn.Module) -> None:
    """``positions = 0 .. T-1`` is the default; other positions are really used."""
    x = torch.randint(0, model.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    pos = torch.arange(12).expand(2, 12)
    with torch.no_grad():
        default = model(x).logits
        explicit = model(x, positions=pos).logits
        stretched = model(x, positions=pos * 2).logits
        shifted = model(x, positions=pos + 5).logits
    torch.testing.assert_close(explicit, default, rtol=0, atol=0)
    assert (stretched - default).abs().max() > 1e-3
    # rotary embeddings are relative: shifting every position by a constant changes nothing
    torch.testing.assert_close(shifted, default, rtol=1e-5, atol=1e-5)
