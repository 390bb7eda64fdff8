"""``python -m nucstudy.study``: the main job (:func:`nucstudy.study.main_job.main`)."""

from nucstudy.study.main_job import main

raise SystemExit(main())
