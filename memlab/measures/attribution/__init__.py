"""Data attribution scored against a population (see docs/attribution.md).

- :mod:`~memlab.measures.attribution.lds`: the linear datamodeling score;
- :mod:`~memlab.measures.attribution.datamodels`: datamodels and difference in means;
- :mod:`~memlab.measures.attribution.gradients`: per-example gradients (torch.func);
- :mod:`~memlab.measures.attribution.methods`: the cheap methods.
"""

from memlab.measures.attribution.datamodels import difference_in_means, fit_datamodels
from memlab.measures.attribution.lds import LDS, lds, lds_from_predictions, predict
from memlab.measures.attribution.methods import METHODS, Problem, compute

__all__ = ["LDS", "METHODS", "Problem", "compute", "difference_in_means", "fit_datamodels", "lds",
           "lds_from_predictions", "predict"]
