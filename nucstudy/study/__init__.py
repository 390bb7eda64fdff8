"""The study: experiments, their results registry, and what the book shows.

- :mod:`~nucstudy.study.experiment`: :class:`~nucstudy.study.experiment.ExperimentConfig`
  (its checks in :mod:`~nucstudy.study.experiment_checks`), its presets, and
  :func:`~nucstudy.study.registry.collect` (run folders into a table);
- :mod:`~nucstudy.study.main_job`: the main job (``python -m nucstudy.study``);
- :mod:`~nucstudy.study.evaluate` (run folders scored on test data),
  :mod:`~nucstudy.study.recipe` (the training recipe's arms), :mod:`~nucstudy.study.ablations`,
  :mod:`~nucstudy.study.table1` (its equal-compute budget in
  :mod:`~nucstudy.study.compute_budget`), :mod:`~nucstudy.study.verdicts` (differences
  against the seed spread), :mod:`~nucstudy.study.departures`, :mod:`~nucstudy.study.ood`
  (unseen tissue),
  :mod:`~nucstudy.study.tuning` (post-processing thresholds), :mod:`~nucstudy.study.gpu_study`,
  :mod:`~nucstudy.study.stated_scores` (what a committed model file scores),
  :mod:`~nucstudy.study.submission` (challenge files), :mod:`~nucstudy.study.plots` and
  :mod:`~nucstudy.study.paths` (the figures and folders the book shares);
- what the book's results pages show: :mod:`~nucstudy.study.report` (tables as the book
  shows them), :mod:`~nucstudy.study.table1_report` and
  :mod:`~nucstudy.study.table1_provenance` (Table I's answer first, provenance after),
  :mod:`~nucstudy.study.ood_report`, :mod:`~nucstudy.study.ood_summary` and
  :mod:`~nucstudy.study.ood_plots` (the out-of-domain results by recipe, means over seeds,
  and the sentences that read them out), :mod:`~nucstudy.study.config_words` (a run's
  settings in words).

May import every layer but the cli.
"""


def __getattr__(name: str):
    """The names of the old module ``nucstudy.study`` (see :mod:`nucstudy._compat`)."""
    from nucstudy._compat import package_getattr

    return package_getattr("nucstudy.study", name)
