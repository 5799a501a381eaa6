"""Feedback and reward (notebooks 05_feedback, 06_baton): BATON and Diffusion-KTO.

Binary feedback on the base model's clips (simulated annotators, or people through the widgets and
the workshop) trains a reward model; BATON's reward-weighted fine-tuning and KTO use it.

- ``reward``       BATON's prompts, simulated annotators, the reward model
- ``released``     BATON's released label files (HA, RA) as the fine-tunes' data
- ``baton``        reward-weighted fine-tuning
- ``kto``          Diffusion-KTO on the same labels
- ``labels``       answers on disk: append-only logs, merges per question; ``agreement`` Cohen/Fleiss
- ``label_items``  what people label, straight from a run folder, and who labels which
- ``widgets``      listening to pairs and labelling audio in the notebook (ipywidgets)
- ``workshop``     the workshop's state: who labels what, answers, progress, agreement, merges
- ``workshop_people``  the room: session code, teacher token, participants' ids and tokens
- ``workshop_summary``  the teacher's view, kept incrementally: merges, kappas, agreement with the truth
- ``workshop_server``  ``python -m t2a_lib.feedback.workshop_server`` (``make workshop``): its pages (``static/``)
- ``workshop_train``   the room's labels trained on, before / after (``make workshop-train``)
"""
