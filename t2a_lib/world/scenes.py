"""The procedural sound world: parametric synthesisers, scenes and their timelines.

Every clip is built from 1-3 sound events placed on a known timeline, so later stages can ask
"are the prompted events present, and in the prompted order?" against ground truth instead of a
learned proxy. Each class is a small synthesiser with per-instance randomness (pitch, duration,
timbre, loudness); all randomness flows from one ``numpy.random.Generator`` so a seed fixes a clip.

Synthesisers fill exactly the samples they are given (short fades at both ends), so an event's
labelled ``[onset, offset]`` span is where its energy is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SAMPLE_RATE = 16000

# ----------------------------------------------------------------------------------------------
# small signal helpers


def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def _fade(x: np.ndarray, sr: int, ms: float = 8.0) -> np.ndarray:
    """Raised-cosine fade in and out so events start and stop without clicks."""
    k = min(int(sr * ms / 1000), len(x) // 2)
    if k > 1:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _osc(freq: np.ndarray | float, n: int, sr: int, phase: float = 0.0) -> np.ndarray:
    """Sine oscillator; ``freq`` may be a per-sample array (phase is integrated)."""
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    return np.sin(2 * np.pi * np.cumsum(f) / sr + phase)


def _bandnoise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """White noise band-limited to [lo, hi] Hz with an FFT mask (fast, exact band edges)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spec[(freqs < lo) | (freqs > hi)] = 0
    y = np.fft.irfft(spec, n)
    return y / (np.abs(y).max() + 1e-9)


def _bursts(n: int, sr: int, burst_s: float, gap_s: float) -> list[tuple[int, int]]:
    """Evenly spread bursts of ~burst_s with ~gap_s gaps so the first starts at 0 and the last
    ends at n (the event's span is fully covered by its bursts)."""
    b = max(int(burst_s * sr), 1)
    g = int(gap_s * sr)
    k = max(1, (n + g) // (b + g))
    b = min(b, n)
    if k == 1:
        return [(0, n)]
    starts = np.linspace(0, n - b, k).astype(int)
    return [(int(s), int(s) + b) for s in starts]


def _decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-_t(n, sr) / tau)


# ----------------------------------------------------------------------------------------------
# the synthesisers: f(rng, n_samples, sr) -> float64 array of length n, peak ~1


def synth_dog_bark(rng, n, sr):
    out = np.zeros(n)
    f0 = rng.uniform(320, 560)
    for s, e in _bursts(n, sr, rng.uniform(0.13, 0.2), rng.uniform(0.06, 0.16)):
        m = e - s
        pitch = f0 * rng.uniform(0.9, 1.1) * np.linspace(1.0, rng.uniform(0.65, 0.8), m)
        tone = sum(_osc(pitch * h, m, sr) / h ** 0.8 for h in range(1, 9))
        grit = _bandnoise(rng, m, sr, 500, 2500) * 0.35
        env = np.minimum(1.0, _t(m, sr) / 0.01) * _decay(m, sr, rng.uniform(0.05, 0.09))
        env = np.maximum(env, 0.25 * np.hanning(m))  # keep the whole burst audible
        out[s:e] = _fade((tone / 3 + grit) * env, sr, 4)
    return out


def synth_siren(rng, n, sr):
    t = _t(n, sr)
    fc, dev, rate = rng.uniform(700, 1100), rng.uniform(200, 420), rng.uniform(0.9, 2.5)
    f = fc + dev * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    x = _osc(f, n, sr) + 0.3 * _osc(2 * f, n, sr) + 0.12 * _osc(3 * f, n, sr)
    return _fade(x, sr, 15)


def synth_bell(rng, n, sr):
    f0 = rng.uniform(450, 1000)
    ratios, amps = [1.0, 2.0, 2.76, 5.4, 8.93], [1.0, 0.6, 0.5, 0.3, 0.2]
    strikes = _bursts(n, sr, rng.uniform(0.5, 0.9), 0.0)
    out = np.zeros(n)
    for s, e in strikes:
        m = e - s
        tau = max(0.15, m / sr / 2.2)
        x = sum(a * _osc(f0 * r, m, sr) * _decay(m, sr, tau / (1 + 0.4 * i))
                for i, (r, a) in enumerate(zip(ratios, amps)))
        out[s:e] = x
    return _fade(out, sr, 4)


def synth_rain(rng, n, sr):
    hiss = _bandnoise(rng, n, sr, rng.uniform(1500, 2500), 7800) * 0.35
    drops = np.zeros(n)
    k = int(rng.uniform(40, 90) * n / sr)
    pos = rng.integers(0, max(n - 80, 1), k)
    click = _bandnoise(rng, 80, sr, 2500, 6500) * _decay(80, sr, 0.002)
    for p in pos:
        drops[p:p + 80] += click * rng.uniform(0.3, 1.0)
    return _fade(hiss + 0.6 * drops, sr, 30)


def synth_clock_tick(rng, n, sr):
    out = np.zeros(n)
    period = 1.0 / rng.uniform(3.5, 6.0)
    fa, fb = rng.uniform(2600, 3400), rng.uniform(1800, 2400)
    m = int(0.025 * sr)
    for i, (s, _) in enumerate(_bursts(n, sr, 0.025, period - 0.025)):
        f = fa if i % 2 == 0 else fb
        e = min(s + m, n)
        tick = (_osc(f, e - s, sr) + 0.5 * _bandnoise(rng, e - s, sr, 3000, 6000)) * _decay(e - s, sr, 0.006)
        out[s:e] = tick
    return out


def synth_bird_chirp(rng, n, sr):
    out = np.zeros(n)
    lo, hi = rng.uniform(2200, 3000), rng.uniform(3800, 5200)
    up = rng.random() < 0.6
    for s, e in _bursts(n, sr, rng.uniform(0.05, 0.09), rng.uniform(0.03, 0.09)):
        m = e - s
        sweep = np.linspace(lo, hi, m) if up else np.linspace(hi, lo, m)
        out[s:e] = _osc(sweep, m, sr) * np.hanning(m) ** 0.5
    return out


def synth_engine_hum(rng, n, sr):
    t = _t(n, sr)
    f0 = rng.uniform(38, 85)
    x = sum(_osc(f0 * h, n, sr, rng.uniform(0, 6)) / h ** 0.7 for h in range(1, 13))
    am = 1 + 0.35 * np.sin(2 * np.pi * f0 / 2 * t)
    rumble = _bandnoise(rng, n, sr, 20, 400) * 0.5
    return _fade(x / 3 * am + rumble, sr, 40)


def synth_whistle(rng, n, sr):
    t = _t(n, sr)
    f = rng.uniform(1300, 2600) * (1 + 0.012 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t))
    glide = np.minimum(1.0, t / 0.08) * 0.08 + 0.92
    x = _osc(f * glide, n, sr) + 0.08 * _bandnoise(rng, n, sr, 1000, 4000)
    return _fade(x, sr, 20)


def synth_knock(rng, n, sr):
    out = np.zeros(n)
    f = rng.uniform(160, 320)
    for s, e in _bursts(n, sr, rng.uniform(0.06, 0.09), rng.uniform(0.08, 0.2)):
        m = e - s
        body = _osc(f * rng.uniform(0.95, 1.05), m, sr) + 0.5 * _osc(f * 2.3, m, sr)
        click = _bandnoise(rng, m, sr, 800, 3000) * _decay(m, sr, 0.004)
        out[s:e] = (body * _decay(m, sr, rng.uniform(0.02, 0.035)) + click)
    return out


def synth_beep(rng, n, sr):
    out = np.zeros(n)
    f = rng.uniform(800, 2000)
    for s, e in _bursts(n, sr, rng.uniform(0.08, 0.15), rng.uniform(0.06, 0.14)):
        m = e - s
        tone = np.sign(_osc(f, m, sr)) * 0.25 + _osc(f, m, sr) * 0.75
        out[s:e] = _fade(tone, sr, 3)
    return out


def synth_wind(rng, n, sr):
    t = _t(n, sr)
    x = _bandnoise(rng, n, sr, 60, rng.uniform(350, 800))
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 6))
    whoosh = _bandnoise(rng, n, sr, 300, 1200) * 0.25 * swell
    return _fade(x * swell + whoosh, sr, 60)


def synth_drum(rng, n, sr):
    out = np.zeros(n)
    period = 1.0 / rng.uniform(3.0, 5.5)
    for i, (s, e) in enumerate(_bursts(n, sr, 0.12, period - 0.12)):
        m = e - s
        if i % 2 == 0:  # kick: falling pitch thump
            f = 50 + rng.uniform(70, 110) * _decay(m, sr, 0.03)
            hit = _osc(f, m, sr) * _decay(m, sr, 0.08)
        else:  # snare: noise crack plus a body tone
            hit = (_bandnoise(rng, m, sr, 1000, 6000) * 0.7 + _osc(190, m, sr) * 0.5) * _decay(m, sr, 0.045)
        out[s:e] = hit
    return out


SYNTHS = {
    "dog_bark": synth_dog_bark,
    "siren": synth_siren,
    "bell": synth_bell,
    "rain": synth_rain,
    "clock_tick": synth_clock_tick,
    "bird_chirp": synth_bird_chirp,
    "engine_hum": synth_engine_hum,
    "whistle": synth_whistle,
    "knock": synth_knock,
    "beep": synth_beep,
    "wind": synth_wind,
    "drum": synth_drum,
}
CLASSES = list(SYNTHS)
TEXTURES = ["rain", "wind", "engine_hum"]  # classes that work as a background bed

# ----------------------------------------------------------------------------------------------
# scenes: which events, where on the timeline


@dataclass(frozen=True)
class Event:
    """A labelled time span in seconds: a scene's event, or one an event detector found."""

    label: str
    onset: float
    offset: float

    def to_dict(self) -> dict:
        return {"label": self.label, "onset": round(self.onset, 4), "offset": round(self.offset, 4)}


@dataclass
class Scene:
    """A clip's ground truth. ``foreground`` events are in time order; ``layout`` is one of
    single | sequence | overlap | background. ``background`` is the texture under the others."""

    foreground: list[Event]
    layout: str
    background: Event | None = None
    gains_db: list[float] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        evs = list(self.foreground) + ([self.background] if self.background else [])
        return sorted(evs, key=lambda e: e.onset)

    def timeline(self) -> list[dict]:
        return [e.to_dict() for e in self.events]


@dataclass
class WorldConfig:
    clip_seconds: float = 2.56
    sample_rate: int = SAMPLE_RATE
    # share of each layout (single, 2-event sequence, 3-event sequence, overlap, background)
    layout_weights: tuple = (0.25, 0.35, 0.15, 0.1, 0.15)
    min_gap: float = 0.08
    noise_floor: float = 3e-4

    def __post_init__(self):
        if self.clip_seconds < MIN_CLIP_SECONDS:
            raise ValueError(f"clip_seconds={self.clip_seconds} is too short: the world's layouts need at least "
                             f"{MIN_CLIP_SECONDS} s (three events with gaps, or a background bed under an event)")
        if len(self.layout_weights) != len(LAYOUTS) or min(self.layout_weights) < 0 or sum(self.layout_weights) <= 0:
            raise ValueError(f"layout_weights must be {len(LAYOUTS)} non-negative numbers for {LAYOUTS}, "
                             f"got {self.layout_weights}")

    def to_dict(self) -> dict:
        return {**asdict(self), "layout_weights": list(self.layout_weights)}


MIN_CLIP_SECONDS = 2.0
LAYOUTS = ("single", "sequence2", "sequence3", "overlap", "background")


def _place_sequence(rng, labels, clip_s, min_gap) -> list[Event]:
    """Non-overlapping events in the given order, durations and gaps drawn at random."""
    k = len(labels)
    avail = clip_s - 0.1
    dur = rng.uniform(0.45, 1.0, k)
    gaps = rng.uniform(min_gap, 0.3, k + 1)
    dur *= min(1.0, (avail - gaps[1:-1].sum() - 0.1) / dur.sum())  # shrink events, never the gaps
    slack = avail - dur.sum() - gaps[1:-1].sum()
    t = 0.05 + rng.uniform(0, max(slack, 0))
    events = []
    for i, lab in enumerate(labels):
        events.append(Event(lab, t, t + dur[i]))
        t += dur[i] + gaps[i + 1]
    return events


def sample_scene(rng: np.random.Generator, config: WorldConfig = WorldConfig()) -> Scene:
    """Draw a scene: a layout, distinct classes, and their timeline."""
    clip = config.clip_seconds
    layout = LAYOUTS[rng.choice(len(LAYOUTS), p=np.asarray(config.layout_weights) / sum(config.layout_weights))]
    if layout == "single":
        lab = str(rng.choice(CLASSES))
        d = rng.uniform(0.6, min(1.8, clip - 0.2))
        on = rng.uniform(0.05, clip - d - 0.05)
        fg, bg = [Event(lab, on, on + d)], None
    elif layout in ("sequence2", "sequence3"):
        k = 2 if layout == "sequence2" else 3
        labels = [str(c) for c in rng.choice(CLASSES, k, replace=False)]
        fg, bg = _place_sequence(rng, labels, clip, config.min_gap), None
        layout = "sequence"
    elif layout == "overlap":
        a, b = (str(c) for c in rng.choice(CLASSES, 2, replace=False))
        on_a = rng.uniform(0.05, 0.5)
        off_a = rng.uniform(clip * 0.55, clip - 0.05)
        on_b = rng.uniform(on_a + 0.1, on_a + 0.6)
        off_b = rng.uniform(max(on_b + 0.5, off_a - 0.4), clip - 0.05)
        fg, bg = sorted([Event(a, on_a, off_a), Event(b, on_b, off_b)], key=lambda e: e.onset), None
    else:  # background texture under one or two foreground events
        tex = str(rng.choice(TEXTURES))
        others = [c for c in CLASSES if c != tex]
        k = 1 if rng.random() < 0.5 else 2
        labels = [str(c) for c in rng.choice(others, k, replace=False)]
        fg = _place_sequence(rng, labels, clip, config.min_gap) if k == 2 else None
        if fg is None:
            d = rng.uniform(0.5, 1.2)
            on = rng.uniform(0.3, clip - d - 0.3)
            fg = [Event(labels[0], on, on + d)]
        bg = Event(tex, rng.uniform(0.0, 0.1), rng.uniform(clip - 0.1, clip))
    n_ev = len(fg) + (bg is not None)
    gains = list(rng.uniform(-9, 0, n_ev))
    if bg is not None:
        gains[-1] -= 6.0  # a background bed sits under the foreground
    return Scene(fg, layout, bg, gains)


def render_scene(scene: Scene, rng: np.random.Generator, config: WorldConfig = WorldConfig()) -> np.ndarray:
    """Synthesise the scene's audio (float32, mono, ``config.sample_rate``)."""
    sr = config.sample_rate
    n = int(round(config.clip_seconds * sr))
    mix = rng.standard_normal(n) * config.noise_floor
    events = list(scene.foreground) + ([scene.background] if scene.background else [])
    for ev, gain_db in zip(events, scene.gains_db):
        s, e = int(round(ev.onset * sr)), min(int(round(ev.offset * sr)), n)
        x = SYNTHS[ev.label](rng, e - s, sr)
        x = x / (np.abs(x).max() + 1e-9)
        mix[s:e] += x * 10 ** (gain_db / 20) * 0.5
    peak = np.abs(mix).max()
    if peak > 0.95:
        mix *= 0.95 / peak
    return mix.astype(np.float32)


def synth_event(label: str, seconds: float, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One isolated event, peak-normalised to 0.5 (for listening and tests)."""
    if label not in SYNTHS:
        raise ValueError(f"unknown sound class {label!r}; known: {', '.join(CLASSES)}")
    x = SYNTHS[label](np.random.default_rng(seed), int(round(seconds * sr)), sr)
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for clip ``index`` of a world with ``seed`` (independent streams)."""
    return np.random.default_rng([int(seed), int(index)])
