"""A short deterministic test sound as a 16-bit PCM WAV (stdlib only): a clock-like tick over a low hum."""

from __future__ import annotations

import math
import pathlib
import struct
import wave


def write_test_sound(path: pathlib.Path, seconds: float = 3.0, sample_rate: int = 16000, channels: int = 1) -> pathlib.Path:
    """Ticks every 0.5 s (a 2 kHz burst decaying in 20 ms) over a 110 Hz hum; the same samples on every run."""
    frames = []
    for n in range(int(seconds * sample_rate)):
        t = n / sample_rate
        since_tick = t % 0.5
        value = 0.2 * math.sin(2 * math.pi * 110 * t) + 0.6 * math.exp(-since_tick / 0.02) * math.sin(2 * math.pi * 2000 * t)
        sample = struct.pack("<h", max(-32768, min(32767, int(value * 32767))))
        frames.append(sample * channels)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(b"".join(frames))
    return path
