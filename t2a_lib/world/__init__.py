"""The world (notebook 00_world): the procedural sound world and the data built from it.

The first stage of the data flow: scenes with exact timelines are rendered to wavs and captioned;
every later stage reads the splits written here.

- ``scenes``    12 parametric synthesisers, scenes and their timelines (``Event``), rendering
- ``captions``  the caption grammar: render, parse back, perturb (swap/drop/add/reorder)
- ``text``      an offline word-level tokenizer over the world's vocabulary
- ``datasets``  world splits: wavs + Tango-format JSON-lines manifests (no caption leakage)
- ``overlap``   how held out a prompt is: text leaks, and test prompts whose ordered events are novel
"""
