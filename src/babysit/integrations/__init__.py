"""babysit inside the trainers people already use: PyTorch Lightning and Hugging Face.

::

    from babysit.integrations.lightning import BabysitCallback  # babysit[lightning]
    trainer = lightning.pytorch.Trainer(callbacks=[BabysitCallback()])

    from babysit.integrations.transformers import BabysitCallback  # babysit[transformers]
    trainer = transformers.Trainer(..., callbacks=[BabysitCallback()])

Both callbacks are thin: the part they share (options, version checks, the run directory, the
step protocol, rollback) is :mod:`babysit.integrations._bridge`, and the statistics are
babysit's own monitors (:mod:`babysit.train.monitors`) driven through a
:class:`babysit.train.watch.Watcher`, so a finding means the same under ``fit``, ``watch``,
Lightning and the Hugging Face ``Trainer`` (docs/architecture.md, "Integrations").

Importing this package imports neither framework: each lives in its own module, imported
only by the user who asks for it.
"""

from __future__ import annotations

from ._bridge import ON_ERROR, SUPPORTED

__all__ = ["ON_ERROR", "SUPPORTED"]
