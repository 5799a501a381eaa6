"""Tango 2's released audio-alpaca, read from a local copy into the suite's preference-set layout.

**As published** (Hugging Face dataset ``declare-lab/audio-alpaca``; its card's ``dataset_info``):
columns ``prompt`` (string), ``chosen`` (audio), ``rejected`` (audio), ``strategy`` (string); one
split, ``train``, 15,025 rows in ``data/train-000NN-of-00020.parquet`` (20 shards, about 9.7 GB).
The card describes the fields only as the prompt, the preferred and the rejected audio sample; it
does not list the values of ``strategy`` or the clips' encoding, so both are taken as they come:
``strategy`` is copied verbatim, and any format libsndfile decodes (wav, flac, ogg, ...) at any
rate is read. A ``datasets`` audio column is stored in parquet as a struct ``{bytes, path}``: the
encoded file's bytes and its original name; where ``bytes`` is null, ``path`` names a file,
relative to the parquet's folder. Tango 2's own trainer (``tango2/tango2-train.py``) reads instead
a JSON or JSON-lines file whose ``prompt``, ``chosen``, ``rejected`` hold wav paths: read too.

**Prepared as Tango 2's trainer prepares a pair** (``torch_tools.wav_to_fbank``): mono, 16 kHz,
Tango's normalisation (mean removed, peak 0.5; ``normalize=False`` to skip), padded or cut to the
run's clip (Tango: 1,024 mel frames, 10.24 s), log-mel (the suite's front end, Tango's conventions)
and the VAE's posterior mean times its scaling factor.

**Written** to ``out_dir`` in notebook 03's layout, which :func:`t2a_lib.align.dpo.load_preference_pairs`
reads: ``preferences.parquet`` (prompt, chosen, rejected, strategy, chosen_id, rejected_id; the
release has no ranker scores, so ``chosen_score``, ``rejected_score`` and ``margin`` are NaN;
``source_file`` and ``source_row`` say where each pair came from), ``latents.safetensors`` (one
latent per distinct clip: a winner shared by several pairs is encoded once, its id the hash of its
bytes), the wavs of ``n_listen`` pairs per strategy under ``audio/`` (``""`` elsewhere, as for the
gold set), and ``alpaca.json`` (what it was built from; an unchanged rerun loads instead).

**Streamed**: shards are read in batches of rows, clips decoded and encoded ``batch_size`` at a time, and
each batch's latents appended to disk at once, so memory stays flat however many pairs there are
(``python -m t2a_lib.align.alpaca_bench`` measures it).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..run.files import read_json, write_json

ALPACA_HOW_TO = ("On a machine with internet run `huggingface-cli download declare-lab/audio-alpaca "
                 "--repo-type dataset --local-dir <folder>` (20 parquet shards under data/, about 9.7 GB), copy "
                 "<folder> here and pass its path; or pass a JSON / JSON-lines file with prompt, chosen and "
                 "rejected wav paths, the form Tango 2's trainer reads")
REQUIRED = ("prompt", "chosen", "rejected")
AUDIO_COLUMNS = ("chosen", "rejected")


class AlpacaFormatError(ValueError):
    """A copy of audio-alpaca that cannot be read: the message names the file, row and column."""


@dataclass
class AlpacaPair:
    prompt: str
    strategy: str
    chosen: bytes  # the encoded audio file
    rejected: bytes
    file: Path
    row: int  # 0-based row of a parquet file or JSON array; 1-based line of a JSON-lines file
    unit: str = "row"  # "row" or "line"

    def where(self, column: str | None = None) -> str:
        return f"{self.file}, {self.unit} {self.row}" + (f", column '{column}'" if column else "")


def find_alpaca_files(source) -> list[Path]:
    """The parquet shards (``data/*.parquet`` or ``*.parquet``) of a local copy, or the JSON file
    given; an absent copy raises ``FileNotFoundError`` saying what to fetch and where to put it."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        for pattern in ("data/train-*.parquet", "data/*.parquet", "*.parquet", "*.jsonl", "*.json"):
            files = sorted(source.glob(pattern))
            if files:
                return files
        raise FileNotFoundError(f"{source} holds no audio-alpaca files (looked for data/*.parquet, *.parquet, "
                                f"*.jsonl, *.json). {ALPACA_HOW_TO}")
    raise FileNotFoundError(f"no audio-alpaca copy at {source}. {ALPACA_HOW_TO}")


def _is_json_lines(path: Path) -> bool:
    if path.suffix == ".parquet":
        return False
    with open(path, encoding="utf-8") as f:
        return not f.read(4096).lstrip().startswith("[")


def _audio_bytes(cell, base: Path, where: str) -> bytes:
    """The encoded file of one audio cell: a ``{bytes, path}`` struct or a path string."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        cell = cell.get("path")
    if not isinstance(cell, str) or not cell:
        raise AlpacaFormatError(f"{where}: no audio (neither bytes nor a file path; got {type(cell).__name__})")
    path = Path(cell) if Path(cell).is_absolute() else base / cell
    if not path.is_file():
        raise FileNotFoundError(f"{where}: audio file {path} not found")
    return path.read_bytes()


def _pair(record: dict, file: Path, row: int, unit: str) -> AlpacaPair:
    where = f"{file}, {unit} {row}"
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise AlpacaFormatError(f"{where}, column 'prompt': expected a non-empty caption, got {prompt!r}")
    strategy = record.get("strategy")
    audio = {c: _audio_bytes(record.get(c), file.parent, f"{where}, column '{c}'") for c in AUDIO_COLUMNS}
    return AlpacaPair(prompt, "audio-alpaca" if strategy is None else str(strategy), audio["chosen"],
                      audio["rejected"], file, row, unit)


def _parquet_records(path: Path):
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        if f.read(64).startswith(b"version https://git-lfs"):
            raise AlpacaFormatError(f"{path} is a Git LFS pointer, not the shard: run `git lfs pull` in the copy, "
                                    f"or fetch it again. {ALPACA_HOW_TO}")
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a truncated or foreign file
        raise AlpacaFormatError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in REQUIRED if c not in table.schema_arrow.names]
    if missing:
        raise AlpacaFormatError(f"{path}: missing column(s) {missing}; audio-alpaca has prompt, chosen, rejected, "
                                f"strategy (found {table.schema_arrow.names})")
    columns = [c for c in (*REQUIRED, "strategy") if c in table.schema_arrow.names]
    row = 0
    for batch in table.iter_batches(batch_size=32, columns=columns):
        for record in batch.to_pylist():
            yield row, record
            row += 1


def _json_records(path: Path):
    """A JSON array (0-based rows) or JSON lines (1-based lines, a trailing comma allowed)."""
    if not _is_json_lines(path):
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise AlpacaFormatError(f"{path}: not valid JSON ({exc})") from None
        yield from enumerate(records)
        return
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip().rstrip(",")
            if not line:
                continue
            try:
                yield line_no, json.loads(line)
            except ValueError as exc:
                raise AlpacaFormatError(f"{path}, line {line_no}: not a JSON object ({exc})") from None


def read_alpaca(source, limit: int | None = None):
    """Every pair of a local copy, in file and row order (at most ``limit``): :class:`AlpacaPair`."""
    n = 0
    for file in find_alpaca_files(source):
        records = _parquet_records(file) if file.suffix == ".parquet" else _json_records(file)
        unit = "line" if _is_json_lines(file) else "row"
        for row, record in records:
            if limit is not None and n >= limit:
                return
            if not isinstance(record, dict):
                raise AlpacaFormatError(f"{file}, {unit} {row}: expected an object, got {type(record).__name__}")
            missing = [c for c in REQUIRED if c not in record]
            if missing:
                raise AlpacaFormatError(f"{file}, {unit} {row}: missing column(s) {missing}")
            yield _pair(record, file, row, unit)
            n += 1


def decode_clip(data: bytes, n_samples: int, where: str, normalize: bool = True) -> np.ndarray:
    """One encoded clip -> (n_samples,) float32 at 16 kHz: mono, resampled, Tango-normalised, padded or cut."""
    import soundfile as sf

    from ..audio.wav import SAMPLE_RATE, AudioError, pad_or_trim, resample, tango_normalize

    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for undecodable bytes
        raise AudioError(f"{where}: cannot decode the audio ({exc})") from None
    if audio.shape[0] == 0 or not np.all(np.isfinite(audio)):
        raise AudioError(f"{where}: the audio is empty or has NaN/infinite samples")
    audio = resample(audio.mean(axis=1), rate, SAMPLE_RATE)
    return pad_or_trim(tango_normalize(audio) if normalize else audio, n_samples).astype(np.float32)


def clip_id(data: bytes) -> str:
    return "alpaca_" + hashlib.sha1(data).hexdigest()[:16]


def _source_key(source, vae, n_frames: int, normalize: bool, limit) -> dict:
    from ..model.fits import fingerprint

    files = find_alpaca_files(source)
    return {"files": [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
            "vae": fingerprint(vae), "n_frames": n_frames, "normalize": normalize, "limit": limit}


@dataclass
class _Encoder:
    """Decodes each distinct clip once and encodes them through the VAE in batches, each batch's latents
    appended to ``latents`` (a :class:`t2a_lib.run.files.StreamingSafetensors`) as soon as it is encoded:
    at most ``batch_size`` waveforms are held, whatever the number of pairs."""

    vae: object
    n_samples: int
    normalize: bool
    batch_size: int
    latents: object  # StreamingSafetensors

    def __post_init__(self):
        self.pending = {}

    def add(self, data: bytes, where: str) -> tuple[str, np.ndarray | None]:
        """The clip's id, and its prepared waveform when it is new (None when seen before)."""
        cid = clip_id(data)
        if cid in self.latents or cid in self.pending:
            return cid, None
        self.pending[cid] = decode_clip(data, self.n_samples, where, self.normalize)
        return cid, self.pending[cid]

    def flush(self, force: bool = False) -> None:
        from ..audio.features import waves_to_mel
        from ..model.autoencoder import encode_mels

        if self.pending and (force or len(self.pending) >= self.batch_size):
            ids = list(self.pending)
            z = encode_mels(self.vae, waves_to_mel(np.stack([self.pending[i] for i in ids])))
            for i, v in zip(ids, z):
                self.latents.add(i, v)
            self.pending.clear()


def _encode_all(pairs, encoder: _Encoder, out_dir: Path, n_listen: int) -> list[dict]:
    """The table's rows; the latents land in ``encoder.latents``, the first ``n_listen`` pairs of
    each strategy as wavs under ``out_dir/audio`` (the clips as prepared for the VAE)."""
    from ..audio.wav import write_wav

    rows, listened = [], {}
    for p in pairs:
        row = {"prompt": p.prompt}
        listen = listened.get(p.strategy, 0) < n_listen
        for column in AUDIO_COLUMNS:
            data = getattr(p, column)
            cid, wave = encoder.add(data, p.where(column))
            row[column], row[f"{column}_id"] = (f"audio/{cid}.wav" if listen else ""), cid
            if listen:
                wave = decode_clip(data, encoder.n_samples, p.where(column), encoder.normalize) if wave is None else wave
                write_wav(out_dir / row[column], wave, durable=False)
        listened[p.strategy] = listened.get(p.strategy, 0) + 1
        rows.append({**row, "strategy": p.strategy, "source_file": str(p.file), "source_row": p.row})
        encoder.flush()
    encoder.flush(force=True)
    return rows


def import_audio_alpaca(source, out_dir, vae, n_frames: int, normalize: bool = True, limit: int | None = None,
                        n_listen: int = 4, batch_size: int = 8) -> pd.DataFrame:
    """Read audio-alpaca from ``source`` (a local copy's folder, or one parquet / JSON file) and write
    it to ``out_dir`` as a preference set encoded by ``vae`` at ``n_frames`` mel frames per clip
    (module docstring). Returns the pair table; loads it when ``out_dir`` holds the same import."""
    from ..run.files import StreamingSafetensors

    out_dir = Path(out_dir)
    key = _source_key(source, vae, n_frames, normalize, limit)
    record = out_dir / "alpaca.json"
    done = read_json(record, "import record") if record.is_file() else {}
    if done.get("key") == key and done.get("written") == _written(out_dir):
        return pd.read_parquet(out_dir / "preferences.parquet")  # this import, and nothing written over it
    out_dir.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)  # written last: an import cut short is redone
    latents = StreamingSafetensors(out_dir / "latents.safetensors")
    try:
        rows = _encode_all(read_alpaca(source, limit), _Encoder(vae, n_frames * 160, normalize, batch_size, latents),
                           out_dir, n_listen)
        if not rows:
            raise AlpacaFormatError(f"{source}: no pairs to read")
    except BaseException:
        latents.discard()
        raise
    latents.close()
    df = pd.DataFrame(rows)
    df["chosen_score"] = df["rejected_score"] = df["margin"] = np.nan  # the release publishes no scores
    df.to_parquet(out_dir / "preferences.parquet", index=False)
    write_json(record, {"key": key, "pairs": len(df), "clips": len(latents), "written": _written(out_dir),
                        "by_strategy": df.strategy.value_counts().to_dict()}, indent=2)
    return df


def _written(out_dir: Path) -> dict:
    """sha256 of the files an import writes: a sampled set written into the same folder since (notebook
    03 with the other source) changes them, so the import's record no longer vouches for them."""
    return {name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest() if (out_dir / name).is_file() else None
            for name in ("preferences.parquet", "latents.safetensors")}


def import_into_run(source, run_dir, pairs: str = "preferences", n_frames: int | None = None, **kw) -> pd.DataFrame:
    """:func:`import_audio_alpaca` with the run's base pipeline's VAE and clip length (Tango's
    10.24 s for a Tango snapshot), into ``run_dir/<pairs>``, where notebook 04 reads pairs."""
    from ..model.autoencoder import frames_per_latent
    from ..model.base_model import load_run_pipeline

    pipe = load_run_pipeline(run_dir)
    if n_frames is None:
        n_frames = pipe.latent_shape()[1] * frames_per_latent(pipe.vae.config)
    return import_audio_alpaca(source, Path(run_dir) / pairs, pipe.vae, n_frames, **kw)

