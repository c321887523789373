"""The papers' thresholds and grids, as plain numbers (importing this loads nothing else, so
study configs and command lines read their defaults from here)."""

# Feldman & Zhang (2020), docs/science.md §1.
MEMORIZED = 0.25  # mem >= this: "memorized"
HIGH_INFLUENCE = 0.15  # infl >= this (with mem >= MEMORIZED, same label): high-influence pair
NEAR_DUPLICATE = 0.95  # cosine similarity (inputs centred on the training mean)
# Jiang et al. (2021): the subset ratios of the C-score sweep.
CSCORE_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Estimators of memorization (memlab.measures.memorization.estimate); "auto" chooses.
MEM_ESTIMATORS = ("binary", "probit", "probit_pooled")
