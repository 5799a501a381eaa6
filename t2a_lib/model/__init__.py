"""The model (notebook 02_base_model): Tango in miniature, its training, and loading real checkpoints.

The base model every method starts from: VAE, text encoder, UNet and vocoder trained component by
component on the world, packaged as a diffusers pipeline.

- ``components``    VAE, T5 encoder, UNet, schedulers from small configs
- ``autoencoder``   training the mel VAE; mel <-> latent
- ``vocoder``       a small HiFi-GAN and the Griffin-Lim fallback; ``vocoder_bench`` its benchmark
- ``diffusion``     the diffusion loss (v/eps, min-SNR) and the one training loop; ``fits`` its cache
- ``grounding``     the word-time cross-attention term
- ``tango``         ``TangoPipeline`` (a diffusers DiffusionPipeline)
- ``base_model``    training the base model component by component, resumable; ``load_run_pipeline``
- ``checkpoints``   loaders for real Tango / Tango 2 snapshots and diffusers AudioLDM folders
- ``referenced_base`` a local real checkpoint as a run's base, referenced (not copied) in the run folder
- ``precision``     what may run in bf16 and what stays float32
- ``release``       the suite's released base model and scorers (``releases/``)
"""
