#!/usr/bin/env bash
# Issue #22's GPU figures, on a machine with one CUDA GPU, from the repository root (after `make setup`):
#
#     bash scripts/gpu_check.sh [OUT]          # OUT: papermill_runs/gpu_check
#
# 1. `python -m t2a_lib.run.bench --sections scale --size tango`: Tango's UNet (865.9M parameters,
#    random weights), bf16 autocast: s/clip at 200 guided steps by batch, DPO pairs/s and peak
#    memory (full / LoRA, gradient checkpointing off / on), each against the 790 TFLOP/s limit
#    (0.41 s per clip, 8.1 ms per pair). A few minutes; written to OUT/bench_tango.json.
# 2. the gpu profile (model_size gpu: 95.7M-parameter UNet) through notebooks 00-04 with every
#    size cut down, so it proves the wiring on a GPU (bf16 training, sampling, DPO), not the results.
#    OUT/run holds the run, OUT/report the report.
# Each part has its own time limit (BENCH_TIMEOUT, RUN_TIMEOUT seconds); the second still runs
# when the first fails, and the script's status is the worse of the two.
set -uo pipefail
OUT=${1:-papermill_runs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || status=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1

echo "== 1. scale benchmark, Tango-size UNet"
timeout "${BENCH_TIMEOUT:-300}" "$PY" -m t2a_lib.run.bench --sections scale --size tango --scale-batches 1 4 8 16 32 \
    > "$OUT/bench_tango.json" || status=$?
cat "$OUT/bench_tango.json"

echo "== 2. gpu profile, notebooks 00-04, reduced"
timeout "${RUN_TIMEOUT:-420}" "$PY" -m t2a_lib.run --profile gpu --only 00 01 02 03 04 \
    --run-dir "$OUT/run" --report-dir "$OUT/report" \
    --set 00_world.n_train=2000 --set 00_world.n_val=200 --set 00_world.n_test=200 \
    --set 01_judges.detector_epochs=1 --set 01_judges.audiotext_epochs=2 --set 01_judges.n_demo=100 \
    --set 01_judges.n_boot=100 \
    --set 02_base_model.text_epochs=2 --set 02_base_model.vae_steps=200 --set 02_base_model.vocoder_steps=200 \
    --set 02_base_model.unet_steps=300 --set 02_base_model.eval_temporal=64 \
    --set 02_base_model.eval_other_per_kind=8 --set 02_base_model.eval_integrity=32 \
    --set 02_base_model.eval_temporal_baton=32 --set 02_base_model.n_agreement=16 --set 02_base_model.n_boot=100 \
    --set 03_preferences.n_prompts=64 --set 03_preferences.gold_order=100 --set 03_preferences.gold_presence=100 \
    --set 04_dpo.dpo_steps=100 --set 04_dpo.n_seeds=1 --set "04_dpo.sweep_lr=[]" --set "04_dpo.sweep_beta=[]" \
    --set "04_dpo.sweep_steps=[]" --set 04_dpo.crpo_rounds=1 --set 04_dpo.crpo_prompts=16 --set 04_dpo.crpo_steps=20 --set 04_dpo.n_boot=100 \
    || status=$?
for f in "$OUT"/run/0[0-4]_*.json; do [ -e "$f" ] && echo "$f" && head -c 1500 "$f" && echo; done
grep -h '"params"\|"model_size"\|"vae_params"' "$OUT"/run/02_base_model.json 2>/dev/null
exit $status
