"""The engine: how networks learn from CoNIC-layout labels and predict them.

- :mod:`~nucstudy.engine.methods`: one object per kind of network (targets, loss, outputs to
  nuclei); the Trainer, inference and evaluation talk to it, never to a model's name;
- :mod:`~nucstudy.engine.losses`: the paper's loss and HoVer-Net's, term by term;
- :mod:`~nucstudy.engine.trainer`: the :class:`~nucstudy.engine.trainer.Trainer` (fast path,
  checkpoints, resume, DDP), :mod:`~nucstudy.engine.training_data` (split, crops,
  augmentation, batches), :mod:`~nucstudy.engine.distributed` (several processes under
  torchrun), :mod:`~nucstudy.engine.schedule` (learning rate by step, EMA),
  :mod:`~nucstudy.engine.run_folder` (the files a run folder holds);
- :mod:`~nucstudy.engine.model_file`: the model file and the small spec it carries
  (:class:`~nucstudy.engine.model_file.ModelSpec`), loaded safely
  (:mod:`~nucstudy.engine.checkpoint`);
- :mod:`~nucstudy.engine.inference`: predictions on patches; :mod:`~nucstudy.engine.device`
  (the fast path), :mod:`~nucstudy.engine.cost` (multiply-adds),
  :mod:`~nucstudy.engine.oracle` (a stand-in model that reads perfect maps).

May import :mod:`nucstudy.models`, :mod:`nucstudy.postprocess`, :mod:`nucstudy.metrics`,
:mod:`nucstudy.data` and :mod:`nucstudy.common`; never the study, segment or cli layers (a
training run's config reaches the Trainer as an object, not as an import).
"""
