"""What an image costs: the encoder-free path (Gemma 4 unified) beside a SigLIP encoder
(Gemma 3).

Encoder-free (`components/multimodal_embedders.py`): an image of h x w pixels is resized to
n merged patches (`multimodal.image.target_size`: 256 for 896 x 896 at a budget of 280), the
embedder runs once over the padded rows of the budget (R = 280: HF's processor pads every image
to it, and the embedder projects padding rows too before they are dropped), and the decoder
prefills n tokens:
    embedder   LN(P) -> Dense P x E -> LN(E) -> + T[x] + T[y] -> LN(E) -> RMS -> Linear E x d
               over R rows (P = (k p)^2 * 3 = 6912, E = 3840 for the 12B); with
               Config.vision_encoder_layers, that many ViT layers of width E before the RMS
    decoder    the model's prefill of n tokens (`costs.analyze`), the image's tokens attending
               to each other both ways on the sliding layers (the same products: the explorer
               counts the full grid in `flops_matmul`, visible pairs in `flops_matmul_causal`)
Audio: RMS -> Linear F x d per 640-sample frame (25 frames a second), then the decoder.

SigLIP encoder (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training"; the
So400m shape of Alabdulmohsin et al. 2023, as Gemma 3 uses it: Gemma Team 2025): the image is
resized to 896 x 896 and cut into 14-pixel patches (64 x 64 = 4096), a ViT of 27 layers of width
1152 (MLP 4304, 16 heads, bidirectional attention over all 4096 patches) encodes them, a 4 x 4
average pool leaves 256, and Gemma 3's projector (RMSNorm, Linear 1152 x d) maps them into the
decoder, which prefills 256 tokens. `SiglipTower` holds that shape; its ops follow HF's
`SiglipVisionModel` (LayerNorms with bias, biased projections, GELU-tanh MLP).

Both paths are evaluated by the cost model's own `evaluate_op` (FLOPs, bytes, roofline time on a
hardware preset); time to first token = the encoder's (or embedder's) time + the prefill's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from glassformer.config import Config
from glassformer.explorer.costs import _sum, analyze, environment, evaluate_op, resolve_dtype
from glassformer.explorer.expr import T, Value
from glassformer.explorer.hardware import DEFAULT_HARDWARE, Hardware, get_hardware
from glassformer.explorer.ops import (
    ACT_FLOPS,
    NORM_FLOPS,
    SOFTMAX_FLOPS,
    Edge,
    Op,
    blend,
    linear,
    residual,
)
from glassformer.multimodal.image import target_size


def _layernorm(name: str, src: str, n: Value, dim: int) -> Op:
    """LayerNorm with a learned scale and bias over n rows of `dim`."""
    return Op(
        name, "norm", [Edge(src, (n, dim))], (n, dim), params=2 * dim,
        flops_other=(NORM_FLOPS["layernorm"] + 1) * n * dim, w_read=2 * dim,
        a_read=n * dim, a_write=n * dim, saved=n * dim,
    )  # fmt: skip


def _unscaled_rms(name: str, src: str, n: Value, dim: int) -> Op:
    return Op(
        name, "norm", [Edge(src, (n, dim))], (n, dim),
        flops_other=NORM_FLOPS["rmsnorm"] * n * dim, a_read=n * dim, a_write=n * dim,
        saved=n * dim,
    )  # fmt: skip


def vision_embed_ops(cfg: Config, rows: Value = T) -> list[Op]:
    """The encoder-free image embedder over `rows` merged patches."""
    p, e, d = cfg.vision_patch_dim, cfg.vision_embed_dim, cfg.d_model
    table = cfg.vision_posemb_size * 2 * e
    position = Op(
        "vision.pos_embedding", "embedding", [Edge("vision.patch_ln2", (rows, e))], (rows, e),
        params=table, flops_other=2 * rows * e, w_read=2 * rows * e, a_read=rows * e,
        a_write=rows * e, note="h + T[x, 0] + T[y, 1]: two rows of the table per patch",
    )  # fmt: skip
    encoder: list[Op] = []
    for i in range(cfg.vision_encoder_layers):
        encoder += vision_encoder_layer_ops(f"vision.encoder.{i}", rows, e,
                                            cfg.vision_encoder_heads)  # fmt: skip
    last = encoder[-1].name if encoder else "vision.pos_norm"
    return [
        _layernorm("vision.patch_ln1", "pixels", rows, p),
        linear("vision.patch_dense", "vision.patch_ln1", rows, (rows,), p, e, bias=True),
        _layernorm("vision.patch_ln2", "vision.patch_dense", rows, e),
        position,
        _layernorm("vision.pos_norm", "vision.pos_embedding", rows, e),
        *encoder,
        _unscaled_rms("vision.norm", last, rows, e),
        linear("vision.projection", "vision.norm", rows, (rows,), e, d, bias=False),
    ]


def vision_encoder_layer_ops(prefix: str, n: Value, w: int, heads: int) -> list[Op]:
    """One ViT layer of the optional encoder over an image's n patch rows
    (`components/vision_encoder.py`, Config.vision_encoder_layers): pre-norm attention over
    every pair of rows (padding rows are masked as keys, but the products cover them), then a
    GELU MLP 4 w wide."""
    m, grid = 4 * w, heads * n * n
    scores = Op(
        f"{prefix}.scores", "attention", [Edge(f"{prefix}.qkv_proj", (heads, n, w // heads))],
        (heads, n, n), flops_mm=2 * n * n * w, a_read=2 * n * w, a_write=grid,
        note="every patch against every patch (bidirectional)",
    )  # fmt: skip
    softmax = Op(
        f"{prefix}.softmax", "softmax", [Edge(f"{prefix}.scores", (heads, n, n))],
        (heads, n, n), flops_other=(SOFTMAX_FLOPS + 1) * grid, a_read=grid, a_write=grid,
    )  # fmt: skip
    mix = Op(
        f"{prefix}.mix", "attention", [Edge(f"{prefix}.softmax", (heads, n, n))], (n, w),
        flops_mm=2 * n * n * w, a_read=grid + n * w, a_write=n * w,
    )  # fmt: skip
    gelu = Op(
        f"{prefix}.gelu", "elementwise", [Edge(f"{prefix}.up_proj", (n, m))], (n, m),
        flops_other=ACT_FLOPS["gelu"] * n * m, a_read=n * m, a_write=n * m,
    )  # fmt: skip
    return [
        _layernorm(f"{prefix}.norm1", "x", n, w),
        linear(f"{prefix}.qkv_proj", f"{prefix}.norm1", n, (n,), w, 3 * w, bias=True),
        scores,
        softmax,
        mix,
        linear(f"{prefix}.o_proj", f"{prefix}.mix", n, (n,), w, w, bias=True),
        residual(f"{prefix}.residual1", f"{prefix}.o_proj", n, (n,), w, f"{prefix}.o_proj"),
        _layernorm(f"{prefix}.norm2", f"{prefix}.residual1", n, w),
        linear(f"{prefix}.up_proj", f"{prefix}.norm2", n, (n,), w, m, bias=True),
        gelu,
        linear(f"{prefix}.down_proj", f"{prefix}.gelu", n, (n,), m, w, bias=True),
        residual(f"{prefix}.residual2", f"{prefix}.down_proj", n, (n,), w, f"{prefix}.down_proj"),
    ]


def audio_embed_ops(cfg: Config, frames: Value = T) -> list[Op]:
    """The encoder-free audio embedder over `frames` raw waveform frames."""
    f, d = cfg.audio_frame_size, cfg.d_model
    return [
        _unscaled_rms("audio.norm", "frames", frames, f),
        linear("audio.projection", "audio.norm", frames, (frames,), f, d, bias=False),
    ]


def multimodal_params(cfg: Config) -> int:
    """Parameters of the image and audio embedders (0 for a text-only config)."""
    ops = (vision_embed_ops(cfg) if cfg.vision_patch_size else []) + (
        audio_embed_ops(cfg) if cfg.audio_frame_size else []
    )
    return sum(op.params for op in ops)


@dataclass(frozen=True)
class SiglipTower:
    """A SigLIP vision encoder and the projector into a decoder (Gemma 3's by default)."""

    layers: int = 27
    width: int = 1152
    mlp: int = 4304
    heads: int = 16
    patch: int = 14
    image: int = 896  # side of the square the image is resized to
    pool: int = 4  # average-pooling kernel (4 x 4 patches -> one token)

    @property
    def patches(self) -> int:
        return (self.image // self.patch) ** 2

    @property
    def tokens(self) -> int:
        return self.patches // self.pool**2


GEMMA3_SIGLIP = SiglipTower()


def siglip_ops(tower: SiglipTower, d_model: int) -> list[tuple[Op, int]]:
    """(op, how many times it runs) for one image through the tower and the projector."""
    n, w, m, h = tower.patches, tower.width, tower.mlp, tower.heads
    patch_in = tower.patch**2 * 3
    position = Op(
        "siglip.position", "embedding", [Edge("siglip.patch_embed", (n, w))], (n, w),
        params=n * w, flops_other=n * w, w_read=n * w, a_read=n * w, a_write=n * w,
    )  # fmt: skip
    # an eager kernel writes and reads the h x n x n scores; a flash kernel keeps them on chip
    grid = h * n * n
    scores = Op(
        "siglip.layer.scores", "attention", [Edge("siglip.layer.qkv", (h, n, w // h))],
        (h, n, n), flops_mm=2 * n * n * w, a_read=2 * n * w, a_write=blend(grid, 0),
        note="every patch against every patch (bidirectional)",
    )  # fmt: skip
    softmax = Op(
        "siglip.layer.softmax", "softmax", [Edge("siglip.layer.scores", (h, n, n))], (h, n, n),
        flops_other=(SOFTMAX_FLOPS + 1) * grid, a_read=blend(grid, 0), a_write=blend(grid, 0),
    )  # fmt: skip
    mix = Op(
        "siglip.layer.mix", "attention", [Edge("siglip.layer.softmax", (h, n, n))], (n, w),
        flops_mm=2 * n * n * w, a_read=blend(grid + n * w, n * w), a_write=n * w,
    )  # fmt: skip
    gelu = Op(
        "siglip.layer.gelu", "elementwise", [Edge("siglip.layer.fc1", (n, m))], (n, m),
        flops_other=ACT_FLOPS["gelu_tanh"] * n * m, a_read=n * m, a_write=n * m,
    )  # fmt: skip
    pooled = tower.tokens
    pool = Op(
        "siglip.pool", "elementwise", [Edge("siglip.post_ln", (n, w))], (pooled, w),
        flops_other=n * w, a_read=n * w, a_write=pooled * w,
        note=f"{tower.pool} x {tower.pool} average pooling: {n} -> {pooled} tokens",
    )  # fmt: skip
    proj_norm = Op(
        "projector.norm", "norm", [Edge("siglip.pool", (pooled, w))], (pooled, w), params=w,
        flops_other=(NORM_FLOPS["rmsnorm"] + 1) * pooled * w, w_read=w, a_read=pooled * w,
        a_write=pooled * w,
    )  # fmt: skip
    once = [
        linear("siglip.patch_embed", "pixels", n, (n,), patch_in, w, bias=True),
        position,
    ]
    layer = [
        _layernorm("siglip.layer.ln1", "x", n, w),
        linear("siglip.layer.qkv", "siglip.layer.ln1", n, (n,), w, 3 * w, bias=True),
        scores,
        softmax,
        mix,
        linear("siglip.layer.o_proj", "siglip.layer.mix", n, (n,), w, w, bias=True),
        residual(
            "siglip.layer.residual1", "siglip.layer.o_proj", n, (n,), w, "siglip.layer.o_proj"
        ),
        _layernorm("siglip.layer.ln2", "siglip.layer.residual1", n, w),
        linear("siglip.layer.fc1", "siglip.layer.ln2", n, (n,), w, m, bias=True),
        gelu,
        linear("siglip.layer.fc2", "siglip.layer.gelu", n, (n,), m, w, bias=True),
        residual("siglip.layer.residual2", "siglip.layer.fc2", n, (n,), w, "siglip.layer.fc2"),
    ]
    after = [
        _layernorm("siglip.post_ln", "x", n, w),
        pool,
        proj_norm,
        linear("projector.linear", "projector.norm", pooled, (pooled,), w, d_model, bias=False),
    ]
    return (
        [(op, 1) for op in once] + [(op, tower.layers) for op in layer] + [(op, 1) for op in after]
    )


def _evaluate(
    pairs: list[tuple[Op, int]], dtype: str, hw: Hardware, attention: str
) -> dict[str, Any]:
    """Totals (and rows) of ops whose formulas hold numbers only."""
    dt = resolve_dtype(dtype)
    env = environment("prefill", 1, 1, attention)
    rows = [evaluate_op(op, env, dt, hw, with_shapes=False) for op, _ in pairs]
    counts = [c for _, c in pairs]
    total = _sum(rows, counts)
    total["weights_bytes"] = total["params"] * dt.weight_bytes
    total["ops"] = [dict(r, count=c) for r, c in zip(rows, counts, strict=True)]
    return total


def _decoder(cfg: Config, tokens: int, dtype: str, hw: Hardware, attention: str) -> dict:
    a = analyze(cfg, "prefill", 1, tokens, dtype, hw, attention)
    keys = ("flops_matmul", "flops_matmul_causal", "flops_executed", "traffic_bytes")
    out = {k: a[k] for k in keys}
    out.update(time_s=a["roofline"]["time_s"], weights_bytes=a["weights_bytes"])
    out["params_total"] = a["params_total"]
    return out


def image_cost(
    cfg: Config,
    height: int,
    width: int,
    max_soft_tokens: int = 280,
    dtype: str = "bf16",
    hardware: str | Hardware = DEFAULT_HARDWARE,
    attention: str = "flash",
) -> dict[str, Any]:
    """One image through the encoder-free path: its embedder and the decoder's prefill of its
    tokens, with time to first token on `hardware`."""
    if not cfg.vision_patch_size:
        raise ValueError(f"{cfg.name}: no image embedder (Config.vision_patch_size is 0)")
    hw = hardware if isinstance(hardware, Hardware) else get_hardware(hardware)
    side = cfg.vision_patch_size * cfg.vision_pool
    h, w = target_size(height, width, cfg.vision_patch_size, cfg.vision_pool, max_soft_tokens)
    tokens = (h // side) * (w // side)
    embedder = _evaluate([(op, 1) for op in vision_embed_ops(cfg, max_soft_tokens)], dtype, hw,
                         attention)  # fmt: skip
    decoder = _decoder(cfg, tokens, dtype, hw, attention)
    return _summary(cfg.name, "encoder-free", [height, width], [h, w], tokens, embedder,
                    decoder, hw, dtype, rows=max_soft_tokens)  # fmt: skip


def audio_cost(
    cfg: Config,
    seconds: float,
    dtype: str = "bf16",
    hardware: str | Hardware = DEFAULT_HARDWARE,
    attention: str = "flash",
    sample_rate: int = 16_000,
) -> dict[str, Any]:
    """A clip of `seconds` through the audio embedder (one token per frame of
    `audio_frame_size` samples, the last zero-padded) and the decoder's prefill of its tokens."""
    if not cfg.audio_frame_size:
        raise ValueError(f"{cfg.name}: no audio embedder (Config.audio_frame_size is 0)")
    if not seconds > 0:
        raise ValueError(f"seconds: must be > 0, got {seconds}")
    hw = hardware if isinstance(hardware, Hardware) else get_hardware(hardware)
    samples = round(seconds * sample_rate)
    tokens = -(-samples // cfg.audio_frame_size)
    embedder = _evaluate([(op, 1) for op in audio_embed_ops(cfg, tokens)], dtype, hw, attention)
    decoder = _decoder(cfg, tokens, dtype, hw, attention)
    out = _summary(cfg.name, "encoder-free audio", [samples], [samples], tokens, embedder,
                   decoder, hw, dtype, rows=tokens)  # fmt: skip
    out.update(seconds=seconds, audio_tokens=tokens)
    return out


def siglip_image_cost(
    cfg: Config,
    tower: SiglipTower = GEMMA3_SIGLIP,
    dtype: str = "bf16",
    hardware: str | Hardware = DEFAULT_HARDWARE,
    attention: str = "flash",
) -> dict[str, Any]:
    """One image through a SigLIP encoder into `cfg`'s decoder (Gemma 3's path)."""
    hw = hardware if isinstance(hardware, Hardware) else get_hardware(hardware)
    encoder = _evaluate(siglip_ops(tower, cfg.d_model), dtype, hw, attention)
    decoder = _decoder(cfg, tower.tokens, dtype, hw, attention)
    out = _summary(cfg.name, "SigLIP encoder", [tower.image, tower.image],
                   [tower.image, tower.image], tower.tokens, encoder, decoder, hw, dtype,
                   rows=tower.patches)  # fmt: skip
    out["tower"] = asdict(tower)
    return out


def _summary(
    model: str,
    path: str,
    image: list[int],
    resized: list[int],
    tokens: int,
    encoder: dict[str, Any],
    decoder: dict[str, Any],
    hw: Hardware,
    dtype: str,
    rows: int,
) -> dict[str, Any]:
    enc = {k: encoder[k] for k in ("params", "flops_matmul", "flops", "bytes", "time_s")}
    enc.update(weights_bytes=encoder["weights_bytes"], rows=rows)
    # the decoder's weights already count an encoder-free model's embedder (its parameters are
    # the model's); a separate tower adds its own
    separate = path != "encoder-free"
    weights = decoder["weights_bytes"] + (encoder["weights_bytes"] if separate else 0)
    return {
        "model": model,
        "path": path,
        "image": image,
        "resized": resized,
        "image_tokens": tokens,
        "encoder": enc,
        "encoder_ops": encoder["ops"],
        "decoder": decoder,
        "prefill_flops": encoder["flops"] + decoder["flops_executed"],
        "prefill_flops_matmul": encoder["flops_matmul"] + decoder["flops_matmul"],
        "weights_bytes": weights,
        "ttft_s": encoder["time_s"] + decoder["time_s"],
        "hardware": hw.name,
        "dtype": dtype,
    }
