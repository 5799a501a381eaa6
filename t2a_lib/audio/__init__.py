"""The shared signal layer: wavs, mels, manifests and features, used by every stage.

No notebook of its own; 00_world writes wavs and manifests through it, and 01-07 read them.

- ``wav``       wav reading/writing with clear errors, resampling
- ``mel``       Tango's mel front end in torch
- ``manifest``  Tango / BATON JSON-lines readers and writers
- ``locations`` manifests' clip locations on this machine (``audio_root``, BATON's ``baton_root``)
- ``features``  cached log-mels per split, frame targets
- ``media``     clips as wav bytes and spectrogram pictures (widgets, workshop, report)
"""
