"""Small random-weight models that several test files build the same way (torch is imported on use)."""

from __future__ import annotations

TINY_EQSR = {
    "light": dict(n_feats=16, n_groups=2, n_resblocks=1, upsampler_width=16),
    "hat": dict(embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=8, upsampler_width=32),
}


def make_tiny_eqsr(which: str, **changes):
    """A small EQSR (``light`` or ``hat``) with random weights; the light one's LayerScale and RGB
    head get real weights (they start at zero), so its scale-modulated path shows in the output."""
    import torch

    from asisr.models.eqsr import build_eqsr_hat, build_eqsr_light

    cfg = {**TINY_EQSR[which], **changes}
    if which == "hat":
        return build_eqsr_hat(**cfg).eval()
    model = build_eqsr_light(**cfg).eval()
    with torch.no_grad():
        for group in model.backbone.groups:
            group.gamma.normal_(0.0, 0.5)
        model.upsampler.to_rgb[1].weight.normal_(0.0, 0.2)
    return model
