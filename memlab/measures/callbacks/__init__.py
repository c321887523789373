"""Training callbacks that measure (or change a batch), usable by any population: pass them
to ``train_population(..., callbacks=[...])`` (see :mod:`memlab.engine.callbacks` for the
protocol). One module per topic."""

from memlab.measures.callbacks.checkpoints import CheckpointRecords, Checkpoints
from memlab.measures.callbacks.critical import (
    AdversarialTraining,
    CriticalSamples,
    ValidationAccuracy,
    lass_seeds,
)
from memlab.measures.callbacks.elasticity import ElasticityProbe
from memlab.measures.callbacks.features import FeatureCallback

__all__ = ["AdversarialTraining", "CheckpointRecords", "Checkpoints", "CriticalSamples",
           "ElasticityProbe", "FeatureCallback", "ValidationAccuracy", "lass_seeds"]
