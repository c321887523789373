"""The math of K models at once: no files, no processes.

A chunk of K models is trained together with stacked weights (K, ...), each model on its
own subset and from its own random streams, so that model k is the same bits whatever
chunk, worker or resume trains it. Nothing here reads or writes a run directory or starts
a process: :mod:`memlab.population` does that, and calls :func:`memlab.engine.loop.train_chunk`.

Modules:

- ``config``: ``PopulationConfig`` (everything that changes results) and the per-model
  random streams (subsets, initialization, shuffling, augmentation, dropout).
- ``task``: what a population learns and records (classification, binary, language model).
- ``modelspec``: what ``model=`` was, and how model k gets its initial weights.
- ``recipe``: schedules, optimizers, clipping, augmentation, dropout masks from streams.
- ``callbacks``: ``TrainState`` and the callback protocol (measurements during training).
- ``stackable``: module swaps that make a stacked model compute the same bits as alone.
- ``precision``: the compute dtype a device supports (from its flags), autocast.
- ``usermodel``: tied and frozen weights, random functions in a user's forward.
- ``probe``: a user's model tried before training; its errors as one line.
- ``loop``: ``train_chunk``, the one training loop.

Importing the package imports none of its modules (``memlab.engine.config`` alone stays light).
"""
