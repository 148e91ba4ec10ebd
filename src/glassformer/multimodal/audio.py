"""WAV files -> raw waveform frames (what `AudioEmbedder` reads).

Gemma 4's unified models take 16 kHz audio cut into frames of 640 samples (40 ms), one soft
token each, with no spectrogram and no encoder: a frame's features are its samples. The last
frame is zero-padded (HF's `Gemma4UnifiedAudioFeatureExtractor`), so a clip of n samples gives
ceil(n / 640) tokens.

Reading uses the standard library's `wave` (PCM WAV, 8/16/24/32-bit integers), samples scaled
to [-1, 1). Conversions and refusals: several channels are averaged to mono; a sample rate
other than 16 kHz is refused (resample first, e.g. `ffmpeg -i in.wav -ar 16000 out.wav`:
resampling well needs a filter this module does not carry); an empty file and a file `wave`
cannot read (compressed or floating-point WAV) raise ValueError naming the file.
"""

from __future__ import annotations

import os
import wave

import numpy as np

SAMPLE_RATE = 16_000


def load_wav(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A PCM WAV file -> float32 mono samples in [-1, 1)."""
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate, n = (
                f.getnchannels(),
                f.getsampwidth(),
                f.getframerate(),
                f.getnframes(),
            )
            raw = f.readframes(n)
    except (wave.Error, EOFError, OSError) as err:
        raise ValueError(f"{path}: cannot read as a PCM WAV file ({err})") from None
    if rate != sample_rate:
        raise ValueError(
            f"{path}: sample rate {rate} Hz; the model takes {sample_rate} Hz audio (resample "
            f"first, e.g. ffmpeg -i {path} -ar {sample_rate} out.wav)"
        )
    if n == 0 or not raw:
        raise ValueError(f"{path}: empty audio (no samples)")
    samples = _decode_pcm(raw, width)
    usable = samples.size // channels * channels  # a truncated last frame is dropped
    if usable == 0:
        raise ValueError(f"{path}: empty audio (no complete sample frame)")
    return samples[:usable].reshape(-1, channels).mean(axis=1, dtype=np.float64).astype(np.float32)


def _decode_pcm(raw: bytes, width: int) -> np.ndarray:
    if width == 1:  # unsigned 8-bit
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:  # little-endian 24-bit: widen to 32 bits
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
        value = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8)
                 | (b[:, 2].astype(np.int32) << 16))  # fmt: skip
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float32) / float(1 << 23)
    if width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2.0**31).astype(np.float32)
    raise ValueError(f"WAV sample width of {width} bytes is not supported")


def frames(waveform: np.ndarray, frame_size: int) -> np.ndarray:
    """Mono samples -> [ceil(n / frame_size), frame_size] frames, the last zero-padded."""
    if waveform.ndim != 1:
        raise ValueError(f"waveform: expected mono samples [n], got shape {waveform.shape}")
    if waveform.size == 0:
        raise ValueError("waveform: empty audio (no samples)")
    pad = (-waveform.size) % frame_size
    padded = np.pad(waveform.astype(np.float32), (0, pad))
    return padded.reshape(-1, frame_size)
