"""t2a_lib: a thin library for aligning text-to-audio diffusion models with preferences.

One subpackage per stage of the data flow; each notebook calls the stage of its number:

    world (00)  ->  scoring (01)  ->  model (02)  ->  align (03, 04)
        the world's clips      judges & rankers     the base model     preferences -> DPO / SFT / CRPO
                                                           |
                                                           +->  feedback (05, 06)
                                                           |      feedback -> reward -> BATON / KTO
                                                           v
                                                    evaluate (07)  ->  the claims table  ->  the report

- ``world``     the procedural sound world, captions, the dataset splits (00_world)
- ``audio``     the shared signal layer: wavs, mels, manifests, cached features, media
- ``scoring``   judges and rankers (detector, audio-text model), the metrics (01_judges)
- ``model``     Tango in miniature: components, diffusion training, the base model, real checkpoints (02)
- ``align``     Tango 2's preference set, DPO, SFT, CRPO (03_preferences, 04_dpo)
- ``feedback``  BATON's feedback, reward model and fine-tuning, KTO, labelling widgets and workshop (05, 06)
- ``evaluate``  evaluation, the papers' tables, the claims, the ranker-judge gap, the report (07)
- ``run``       the runner (``python -m t2a_lib.run``), worker processes, files, benchmarks

Each subpackage's docstring lists its modules.
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
