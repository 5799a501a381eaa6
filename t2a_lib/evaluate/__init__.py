"""Evaluation, claims and the report (notebook 07_reproduce, then the report).

Every model on the same held-out prompts and seeds, scored by the judges only; the papers' tables,
the claims table, the ranker-judge gap, and the results page built from a run folder.

- ``evaluation``      held-out prompts, generation (cached), per-kind summaries, paired effects
- ``reproduce``       the papers' tables, Tango 2's ablations, the listening set
- ``claims``          the claims table (each paper's claim a row); ``MODEL_NAMES``: model id -> display name
- ``ranker_gap``      each fine-tune's gain as the rankers see it, beside the judges
- ``report``          the report (a results page) and summary.json; ``report_sections`` its sections
- ``notebook_html``   executed notebooks as offline HTML (math at build time, frozen widgets)
"""
