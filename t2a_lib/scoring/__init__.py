"""Scorers and metrics (notebook 01_judges): who judges the audio, and with what numbers.

Two independent families, judges (evaluation only) and rankers (they build preferences and rewards),
each an event detector and an order-aware audio-text model, plus the metrics they feed.

- ``encoders``   small audio trunks and text encoders
- ``detector``   the frame-level event detector
- ``audiotext``  the order-aware CLAP-style audio-text model
- ``scorers``    judges vs rankers (never mixed) and ``judge_clips``
- ``clap_real``  optional real CLAP backends (transformers ClapModel, laion_clap)
- ``clap_family`` a real CLAP per role where the data has no timelines (real data)
- ``metrics``    FAD, KL, IS, CLAP score, presence, order accuracy, event F1, bootstrap CIs
- ``cache``      the metrics' disk cache (``cached``, ``content_key``)
- ``corrupt``    controlled corruptions of ground-truth clips
"""
