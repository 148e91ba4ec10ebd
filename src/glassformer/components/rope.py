"""Rotary position embedding (Su et al. 2021, "RoFormer").

Each pair of dims (x_a, x_b) of a query or key at position p is rotated by the angle p * w_i:
    x_a' = x_a cos(p w_i) - x_b sin(p w_i)
    x_b' = x_b cos(p w_i) + x_a sin(p w_i),      w_i = theta ** (-2i / d),  i = 0 .. d/2 - 1
so q.k depends only on the relative position. Two layouts pair the dims differently:
half-split (GPT-NeoX, HF Llama) pairs dim i with i + d/2; interleaved (GPT-J, DeepSeek) pairs
2i with 2i + 1. With partial rotary only the first `rope_dim` dims of a head are rotated.

Context-extension schemes change the frequencies w_i:
- linear (Chen et al. 2023): w_i / factor.
- llama3 (Llama 3.1 report): wavelengths longer than L/low_freq_factor are divided by `factor`,
  shorter than L/high_freq_factor are kept, and a linear ramp in L/wavelength joins them
  (a plain step when the two factors are equal, as in Llama 4 Scout).
- yarn (Peng et al. 2023): per-dimension ramp between interpolation (w_i / factor) and
  extrapolation (w_i) over the dims that complete between beta_slow and beta_fast turns within the
  original context, plus a temperature 0.1 ln(factor) + 1 applied to cos and sin.
- longrope (Ding et al. 2024, "LongRoPE"; Phi-3): w_i / lambda_i with one searched factor
  lambda_i per frequency, from the short set while the sequence fits the original context L0
  and from the long set once it is longer, and cos and sin scaled by sqrt(1 + ln s / ln L0)
  (s = factor, the context-extension ratio). As in HF, one set serves a whole forward call,
  chosen by its last position: a call whose sequence ends past L0 uses the long set for every
  position. Keys cached earlier with the short set would then disagree with the new ones, so
  the model re-runs the sequence once when it first grows past L0, as HF's Phi-3 generation
  does by dropping its cache (`Transformer.hidden_states`).
- proportional (Gemma 4's global layers): the w_i of a rotary over the whole head, of which
  only the first floor(proportion * d / 2) are kept and the rest set to 0 (those pairs are not
  rotated), all divided by `factor`. Unlike partial rotary, the kept frequencies are spaced as
  for the full width and the rotated pairs span the two halves of the whole head.
"""

from __future__ import annotations

import math

import torch

from glassformer.config import Config, RopeScaling


def inverse_frequencies(
    dim: int, theta: float, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, float]:
    """The w_i for a rotary dim `dim`, and the attention factor that multiplies cos and sin."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if scaling is None:
        return inv_freq, 1.0
    if scaling.type == "linear":
        return inv_freq / scaling.factor, 1.0
    if scaling.type == "llama3":
        return _llama3(inv_freq, scaling), 1.0
    if scaling.type == "longrope":
        return longrope(dim, theta, scaling, long=False)
    if scaling.type == "proportional":
        return _proportional(dim, theta, scaling), 1.0
    return _yarn(dim, theta, scaling)


def longrope(dim: int, theta: float, s: RopeScaling, long: bool) -> tuple[torch.Tensor, float]:
    """LongRoPE's w_i / lambda_i from the short or the long factors, and the cos/sin scale."""
    assert s.original_max_seq_len and s.short_factor and s.long_factor
    factors = torch.tensor(s.long_factor if long else s.short_factor, dtype=torch.float32)
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    inv_freq = 1.0 / (factors * theta**exponents)  # HF's order of operations, bit for bit
    if s.attention_factor is not None:
        attention_factor = s.attention_factor
    elif s.factor <= 1.0:
        attention_factor = 1.0
    else:
        attention_factor = math.sqrt(1 + math.log(s.factor) / math.log(s.original_max_seq_len))
    return inv_freq, attention_factor


def _proportional(dim: int, theta: float, s: RopeScaling) -> torch.Tensor:
    assert s.proportion is not None
    kept = int(s.proportion * dim // 2)
    exponents = torch.arange(0, 2 * kept, 2, dtype=torch.int64).float() / dim
    inv_freq = torch.cat((1.0 / (theta**exponents), torch.zeros(dim // 2 - kept)))
    return inv_freq / s.factor


def _llama3(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    assert s.original_max_seq_len and s.low_freq_factor and s.high_freq_factor
    old_len = s.original_max_seq_len
    low_freq_wavelen = old_len / s.low_freq_factor
    high_freq_wavelen = old_len / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    if s.high_freq_factor == s.low_freq_factor:
        # No band between the two wavelengths: a step (HF's ramp there would be 0/0)
        return scaled
    smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn(dim: int, theta: float, s: RopeScaling) -> tuple[torch.Tensor, float]:
    assert s.original_max_seq_len
    factor = s.factor
    if s.attention_factor is not None:
        attention_factor = s.attention_factor
    elif s.mscale and s.mscale_all_dim:
        attention_factor = _yarn_mscale(factor, s.mscale) / _yarn_mscale(factor, s.mscale_all_dim)
    else:
        attention_factor = _yarn_mscale(factor)
    beta_fast = s.beta_fast or 32.0
    beta_slow = s.beta_slow or 1.0

    def correction_dim(n_rotations: float) -> float:
        # The dim whose wavelength turns n_rotations times within the original context.
        return (dim * math.log(s.original_max_seq_len / (n_rotations * 2 * math.pi))) / (
            2 * math.log(theta)
        )

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp
    pos_freqs = theta ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_weight) + (
        1.0 / pos_freqs
    ) * extrapolation_weight
    return inv_freq, attention_factor


class RotaryEmbedding(torch.nn.Module):
    """Holds w_i for one kind of layer and turns positions into (cos, sin)."""

    def __init__(self, dim: int, theta: float, scaling: RopeScaling | None = None) -> None:
        super().__init__()
        inv_freq, self.attention_factor = inverse_frequencies(dim, theta, scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        # LongRoPE: a second set of frequencies for sequences longer than switch_at
        self.switch_at: int | None = None
        if scaling is not None and scaling.type == "longrope":
            self.switch_at = scaling.original_max_seq_len
            self.register_buffer("long_inv_freq", longrope(dim, theta, scaling, True)[0], False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """positions [T] -> cos, sin [T, dim/2] in `dtype`."""
        inv_freq = self.inv_freq
        past_switch = self.switch_at is not None and positions.numel() > 0
        if past_switch and int(positions.max()) + 1 > self.switch_at:  # type: ignore[operator]
            inv_freq = self.long_inv_freq
        angles = positions.float()[:, None] * inv_freq.float()[None, :]
        cos = angles.cos() * self.attention_factor
        sin = angles.sin() * self.attention_factor
        return cos.to(dtype), sin.to(dtype)


def rotary_for_layer(config: Config, local: bool) -> RotaryEmbedding:
    """Global layers use rope_theta (+ scaling); sliding layers may use their own theta (and,
    in Gemma 4, their own head_dim)."""
    if local and config.rope_theta_local is not None:
        return RotaryEmbedding(config.rope_dim_of("sliding"), config.rope_theta_local, None)
    dim = config.rope_dim_of("sliding" if local else "full")
    return RotaryEmbedding(dim, config.rope_theta, config.rope_scaling)


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = False
) -> torch.Tensor:
    """Rotate the first 2*cos.shape[-1] dims of x [..., T, head_dim]; the rest pass through."""
    rot = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    if interleaved:
        a, b = x_rot[..., 0::2], x_rot[..., 1::2]
        rotated = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    else:
        a, b = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
        rotated = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    return torch.cat((rotated, x_pass), dim=-1) if x_pass.shape[-1] else rotated
