"""t2a_lib: a thin library for aligning text-to-audio diffusion models with preferences.

One flat module per concern:

- ``world``     the procedural sound world (synthesisers, scenes, timelines)
- ``captions``  the caption grammar: render, parse, perturb
- ``datasets``  writing world datasets (wavs + Tango-format manifests)
- ``audio``     wav reading/writing, resampling, checks
- ``mel``       Tango's mel front end in torch
- ``manifest``  Tango / BATON JSON-lines readers and writers
- ``metrics``   FAD, KL, IS, CLAP score, presence, order accuracy, event F1, bootstrap
- ``pipeline``  the papermill runner over the ordered notebooks
- ``report``    the HTML report and summary
"""

__version__ = "0.1.0"
