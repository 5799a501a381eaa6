"""Preference alignment (notebooks 03_preferences, 04_dpo): Tango 2's preference set and DPO.

The base model's own samples, ranked by the rankers, become audio-alpaca preference pairs; DPO,
SFT on winners and CRPO fine-tune the base model on them.

- ``preferences``  Tango 2's audio-alpaca preference set (S1.1, S1.2, S2, S3; alpha/beta/delta filters)
- ``gold_pairs``   preference pairs whose label the world knows (a positive control)
- ``dpo``          Diffusion-DPO, SFT on winners, CRPO online rounds
- ``audio_alpaca`` Tango 2's released audio-alpaca (a local copy) read into the preference set's layout, streamed;
  ``alpaca_bench`` its memory and time as the pair count grows
- ``sde_sampler``  a stochastic DDPM sampler whose per-step Gaussian log-probabilities are exact (for online RL)
- ``grpo``         online RL: GRPO over that sampler, rewarded by the rankers, KL to the reference model;
  ``grpo_bench`` its time per round and reward on the release
- ``dpo_bench``    LoRA-DPO against full DPO on a real checkpoint: step time, peak memory, trainable parameters
"""
