"""Tango 2's audio-alpaca as published on the Hugging Face hub (parquet shards, columns prompt, chosen,
rejected, strategy; audio cells as datasets' {bytes, path} structs), and Tango 2's trainer's JSON form,
read into the suite's preference-set layout: tested on a tiny copy written here in that layout."""

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from checkpoint_fixtures import make_tiny_tango
from real_smoke_fixtures import write_alpaca_shard
from t2a_lib.align.audio_alpaca import AlpacaFormatError, decode_clip, import_audio_alpaca, read_alpaca
from t2a_lib.align.dpo import load_preference_pairs
from t2a_lib.align.preferences import statistics_table
from t2a_lib.audio.features import waves_to_mel
from t2a_lib.audio.wav import AudioError
from t2a_lib.model.autoencoder import mel_to_image
from t2a_lib.model.tango import pipeline_from_checkpoint

torch.set_num_threads(2)
N_FRAMES = 32  # 0.32 s clips keep the test quick (Tango's are 1024 frames)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return pipeline_from_checkpoint(make_tiny_tango(tmp_path_factory.mktemp("tango"), seed=0))


def _clip(freq: float, rate: int = 16000, channels: int = 1, seconds: float = 0.3, fmt: str = "WAV") -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05
    data = np.stack([wave * (1 + 0.5 * c) for c in range(channels)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt)
    return buf.getvalue()


def _cell(data: bytes | None, path: str | None = None) -> dict:
    return {"bytes": data, "path": path}


@pytest.fixture()
def alpaca_copy(tmp_path):
    """Two shards as in data/train-000NN-of-00020.parquet: a winner shared by two pairs, a 22.05 kHz
    stereo clip, a FLAC clip, and one cell naming a file beside the shard instead of holding bytes."""
    best = _clip(440)
    shard0 = [{"prompt": "A dog barks", "chosen": _cell(best, "a.wav"), "rejected": _cell(_clip(300, 22050, 2), "b.wav"),
               "strategy": "inference steps"},
              {"prompt": "A dog barks", "chosen": _cell(best, "a.wav"), "rejected": _cell(_clip(200, fmt="FLAC")),
               "strategy": "inference steps"}]
    (tmp_path / "copy" / "data" / "clips").mkdir(parents=True)
    (tmp_path / "copy" / "data" / "clips" / "c.wav").write_bytes(_clip(550))
    shard1 = [{"prompt": "Rain falls while a bird chirps", "chosen": _cell(None, "clips/c.wav"),
               "rejected": _cell(_clip(660)), "strategy": "temporal perturbation"}]
    write_alpaca_shard(tmp_path / "copy" / "data" / "train-00000-of-00002.parquet", shard0)
    write_alpaca_shard(tmp_path / "copy" / "data" / "train-00001-of-00002.parquet", shard1)
    return tmp_path / "copy"


def test_the_published_layout_becomes_a_preference_set_dpo_reads(alpaca_copy, tmp_path, pipe):
    out = tmp_path / "preferences"
    df = import_audio_alpaca(alpaca_copy, out, pipe.vae, N_FRAMES, n_listen=1)
    assert df.prompt.tolist() == ["A dog barks", "A dog barks", "Rain falls while a bird chirps"]
    assert df.strategy.tolist() == ["inference steps", "inference steps", "temporal perturbation"]  # verbatim
    assert df.chosen_id[0] == df.chosen_id[1] and df.rejected_id[0] != df.rejected_id[1]
    assert df.source_row.tolist() == [0, 1, 0] and df.source_file[2].endswith("train-00001-of-00002.parquet")
    assert df.chosen_score.isna().all()  # audio-alpaca publishes no scores
    table2 = statistics_table(df)  # the release's own strategies get rows of their own
    assert table2.pairs.to_dict() == {"S1.1": 0, "S1.2": 0, "S2": 0, "S3": 0, "inference steps": 2,
                                      "temporal perturbation": 1, "all": 3}
    assert df.chosen.tolist() == [f"audio/{df.chosen_id[0]}.wav", "", f"audio/{df.chosen_id[2]}.wav"]
    assert all((out / p).is_file() for p in df.chosen.tolist() + df.rejected.tolist() if p)
    bank, table = load_preference_pairs(out, pipe.text_encoder, pipe.tokenizer)
    assert bank.winners.shape == (3, 8, N_FRAMES // 4, 16) and len(table) == 3
    assert torch.equal(bank.winners[0], bank.winners[1])
    mtime = (out / "preferences.parquet").stat().st_mtime_ns
    import_audio_alpaca(alpaca_copy, out, pipe.vae, N_FRAMES, n_listen=1)  # unchanged: loaded, not rebuilt
    assert (out / "preferences.parquet").stat().st_mtime_ns == mtime


def test_a_latent_equals_an_independent_preparation_of_its_clip(alpaca_copy, tmp_path, pipe):
    out = tmp_path / "preferences"
    import_audio_alpaca(alpaca_copy, out, pipe.vae, N_FRAMES)
    bank, _ = load_preference_pairs(out, pipe.text_encoder, pipe.tokenizer)
    clip = _clip(300, 22050, 2)  # the loser of row 0
    data, rate = sf.read(io.BytesIO(clip), dtype="float64")
    wave = resample_poly(data.mean(axis=1), 320, 441)  # 22,050 -> 16,000 Hz
    wave = 0.5 * (wave - wave.mean()) / (np.abs(wave - wave.mean()).max() + 1e-8)  # Tango's normalize_wav
    wave = np.pad(wave, (0, N_FRAMES * 160 - len(wave)))[: N_FRAMES * 160]
    prepared = decode_clip(clip, N_FRAMES * 160, "row 0")
    np.testing.assert_allclose(prepared, wave, atol=1e-6)  # float32 against float64: measured 2e-7
    # the latent: the VAE's posterior mean of the prepared clip's log-mel times the scaling factor. (From
    # the float64 wave instead, log-mel bins near the 1e-5 clamp turn those 2e-7 into 4e-4.)
    with torch.no_grad():
        mel = mel_to_image(waves_to_mel(prepared[None]))
        expected = pipe.vae.encode(mel).latent_dist.mean[0] * pipe.vae.config.scaling_factor
    torch.testing.assert_close(bank.losers[0], expected, atol=2e-5, rtol=0)  # encoded in a batch of 5


def test_tango2_trainers_json_lines_with_wav_paths(tmp_path, pipe):
    (tmp_path / "w.wav").write_bytes(_clip(440))
    (tmp_path / "l.wav").write_bytes(_clip(300))
    lines = [json.dumps({"prompt": "A bell rings", "chosen": "w.wav", "rejected": str(tmp_path / "l.wav")}) + ","]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    df = import_audio_alpaca(tmp_path / "train.jsonl", tmp_path / "out", pipe.vae, N_FRAMES)
    assert df.strategy.tolist() == ["audio-alpaca"] and df.source_row.tolist() == [1]


def test_an_absent_copy_says_what_to_fetch_and_where(tmp_path):
    for where in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(FileNotFoundError) as err:
            list(read_alpaca(where))
        assert str(where) in str(err.value)
        assert "huggingface-cli download declare-lab/audio-alpaca --repo-type dataset" in str(err.value)


def test_bad_input_names_file_row_and_column(tmp_path, pipe):
    shard = tmp_path / "a" / "train-00000-of-00001.parquet"
    write_alpaca_shard(shard, [{"prompt": "x", "chosen": _cell(_clip(440))}], columns=("prompt", "chosen", "strategy"))
    with pytest.raises(AlpacaFormatError, match=r"train-00000-of-00001.parquet.*missing column.*rejected"):
        list(read_alpaca(shard.parent))
    good = _cell(_clip(440))
    cases = {"chosen": {"prompt": "x", "chosen": _cell(None), "rejected": good},
             "prompt": {"prompt": " ", "chosen": good, "rejected": good},
             "rejected": {"prompt": "x", "chosen": good, "rejected": _cell(b"not audio at all")}}
    for column, bad in cases.items():
        shard = tmp_path / column / "data" / "train-00000-of-00001.parquet"
        write_alpaca_shard(shard, [{"prompt": "ok", "chosen": good, "rejected": good, "strategy": "s"}, bad])
        with pytest.raises((AlpacaFormatError, AudioError)) as err:
            import_audio_alpaca(tmp_path / column, tmp_path / f"out_{column}", pipe.vae, N_FRAMES)
        assert f"{shard}, row 1, column '{column}'" in str(err.value)
    (tmp_path / "absent.jsonl").write_text('{"prompt": "x", "chosen": "w.wav", "rejected": "l.wav"}\n')
    with pytest.raises(FileNotFoundError, match=r"absent.jsonl, line 1, column 'chosen'.*not found"):
        list(read_alpaca(tmp_path / "absent.jsonl"))
    lfs = tmp_path / "lfs" / "data" / "train-00000-of-00020.parquet"
    lfs.parent.mkdir(parents=True)
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 486000000\n")
    with pytest.raises(AlpacaFormatError, match="Git LFS pointer"):
        list(read_alpaca(tmp_path / "lfs"))
    (tmp_path / "broken.jsonl").write_text("\n{oops\n")
    with pytest.raises(AlpacaFormatError, match=r"broken.jsonl, line 2: not a JSON object"):
        list(read_alpaca(tmp_path / "broken.jsonl"))


def test_streamed_latents_read_back_as_safetensors_own_writer_gives_them(tmp_path):
    """The streamed file against safetensors' own save_file: the same tensors, names, dtypes and shapes."""
    import torch
    from safetensors.torch import load_file, save_file

    from t2a_lib.run.files import StreamingSafetensors

    gen = torch.Generator().manual_seed(0)
    tensors = {f"alpaca_{i:02d}": torch.randn(8, 3 + i, 16, generator=gen) for i in range(5)}
    tensors["half"] = torch.randn(2, 3, generator=gen).half()
    streamed = StreamingSafetensors(tmp_path / "streamed.safetensors")
    for name, t in tensors.items():
        streamed.add(name, t)
    assert "alpaca_03" in streamed and len(streamed) == 6
    streamed.close()
    save_file(tensors, tmp_path / "reference.safetensors")
    ours, theirs = load_file(tmp_path / "streamed.safetensors"), load_file(tmp_path / "reference.safetensors")
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype and torch.equal(ours[name], theirs[name]), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.safetensors", "streamed.safetensors"]
