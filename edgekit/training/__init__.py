"""Training: one loop (``loop``), augmentations (``augment``), tasks (``tasks``) and the recipe → checkpoint
step (``run``). Import from the submodule: this package ``__init__`` stays empty so ``tasks`` and ``augment``
can be used from low layers without pulling in the loop (and with it the recipe)."""
