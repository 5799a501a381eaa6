"""t2a_lib: a thin library for aligning text-to-audio diffusion models with preferences.

One flat module per concern.

The world and its data
- ``world``        the procedural sound world: 12 synthesisers, scenes and their timelines
- ``captions``     the caption grammar: render, parse back, perturb (swap/drop/add/reorder)
- ``datasets``     world splits: wavs + Tango-format JSON-lines manifests (no caption leakage)
- ``audio``        wav reading/writing with clear errors, resampling
- ``mel``          Tango's mel front end in torch
- ``manifest``     Tango / BATON JSON-lines readers and writers
- ``features``     cached log-mels per split, frame targets
- ``text``         an offline word-level tokenizer over the world's vocabulary

Scorers and metrics
- ``encoders``     small audio trunks and text encoders
- ``detector``     the frame-level event detector
- ``audiotext``    the order-aware CLAP-style audio-text model
- ``scorers``      judges vs rankers (never mixed) and ``judge_clips``
- ``clap_real``    optional real CLAP backends (transformers ClapModel, laion_clap)
- ``metrics``      FAD, KL, IS, CLAP score, presence, order accuracy, event F1, bootstrap CIs
- ``corrupt``      controlled corruptions of ground-truth clips

The model
- ``components``   Tango in miniature: VAE, T5 encoder, UNet, schedulers from small configs
- ``autoencoder``  training the mel VAE; mel <-> latent
- ``vocoder``      a small HiFi-GAN and the Griffin-Lim fallback
- ``diffusion``    the diffusion loss (v/eps, min-SNR) and the one training loop
- ``tango``        ``TangoPipeline`` (a diffusers DiffusionPipeline)
- ``base_model``   training the base model component by component, resumable
- ``checkpoints``  loaders for real Tango / Tango 2 snapshots and diffusers AudioLDM folders

The methods
- ``preferences``  Tango 2's audio-alpaca preference set (S1.1, S1.2, S2, S3; alpha/beta/delta filters)
- ``dpo``          Diffusion-DPO, SFT on winners, CRPO online rounds
- ``reward``       BATON's prompts, simulated annotators, the reward model
- ``baton``        reward-weighted fine-tuning
- ``widgets``      listening to pairs and labelling audio in the notebook (ipywidgets)
- ``labels``       answers on disk: append-only logs, merges per question, Cohen/Fleiss agreement
- ``label_items``  what people label, straight from a run folder, and who labels which
- ``workshop``     ``make workshop``: participants' listening/labelling pages, the teacher's page
- ``media``        clips as wav bytes and spectrogram pictures

Running and reporting
- ``evaluation``   held-out prompts, generation (cached), per-kind summaries, paired effects
- ``reproduce``    the papers' tables and the claims table
- ``pipeline``     the papermill runner over the ordered notebooks
- ``report``       the report (a results page) and summary.json; ``report_sections`` its sections
- ``notebook_html`` executed notebooks as offline HTML (math at build time, frozen widgets)
"""

__version__ = "0.1.0"


def _numpy_blas_on_one_thread() -> None:
    """numpy's BLAS (OpenBLAS) runs on one thread wherever the library is imported. The suite's
    numpy linear algebra is on small matrices (128-dim covariances, bootstraps) beside PyTorch's
    own threads, where OpenBLAS's spinning threads cost 10x and more on 2 cores: 200 bootstrap
    Fréchet distances took 6.2 s on two BLAS threads against 0.54 s on one, with other work
    running (metrics.frechet_distance_ci, 600 x 128 against 325 x 128). PyTorch is not affected."""
    import numpy  # noqa: F401  (the limit applies to the BLAS libraries loaded now: numpy's and scipy's)
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


_numpy_blas_on_one_thread()
