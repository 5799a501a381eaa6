"""Evaluation, claims and the report (notebook 07_reproduce, then the report).

Every model on the same held-out prompts and seeds, scored by the judges only; the papers' tables,
the claims table, the ranker-judge gap, and the results page built from a run folder.

- ``evaluation``      held-out prompts, generation (cached), per-kind summaries, paired effects
- ``reproduce``       the papers' tables and the models' ids and display names
- ``claims``          the claims table: each paper's claim as a row
- ``ranker_gap``      each fine-tune's gain as the rankers see it, beside the judges
- ``report``          the report (a results page) and summary.json; ``report_sections`` its sections
- ``notebook_html``   executed notebooks as offline HTML (math at build time, frozen widgets)
"""
