"""Every named random stream: ``numpy.random.default_rng([seed, STREAM, ...])``.

A random choice in memlab draws from its own stream of the master seed, so adding a draw
somewhere never moves another. The numbers are part of every stored result: never change
one, never reuse one for another draw *within the same study* (two studies may use the same
number: they never share a run), and add new names at the end.

Per model (``[seed, replicate, STREAM]``, :mod:`memlab.engine.config`): the population's own
streams, below. Per study or dataset (``[seed, STREAM, ...]``): the rest.
"""

from __future__ import annotations

# ---- a population's models: [seed, replicate, stream]
SUBSET = 0  # which examples model r trains on
INIT = 1  # its initial weights
SHUFFLE = 2  # its minibatch order
DROPOUT = 3  # its dropout masks
AUGMENT = 4  # its augmentations (+ epoch)
DP_SAMPLE = 5  # DP-SGD: its Poisson batches (which examples each step holds)
DP_NOISE = 6  # DP-SGD: the Gaussian noise added to its summed gradients
PRIVACY_CANARY = 7  # which privacy canaries it trains on (Dataset.with_privacy_canaries)
GRADIENT_CANARY = 8  # DP-SGD: which gradient canaries it has, and when each is sampled

# ---- datasets: [seed, stream]
N_TRAIN = 7  # which training examples a study's n_train keeps (also: a corpus's order)
LABEL_NOISE = 101  # which labels Dataset.with_label_noise flips, and to what
RANDOM_INPUTS = 102  # Dataset.with_random_inputs
DUPLICATES = 103  # Dataset.with_duplicates: which examples are copied, and where
PRIVACY_CANARIES = 104  # Dataset.with_privacy_canaries: their inputs and labels
GRADIENT_CANARY_COORDINATES = 105  # DP-SGD: the parameters the gradient canaries push
TEXT_SYNTHETIC = 11  # data.text: the synthetic corpus's documents and their duplicates
MIA_SHADOWS = 0x5AD0  # measures.mia: which shadow models a capped attack uses
MIA_BOOTSTRAP = 0xB007  # measures.mia: bootstrap resamples of the models (targets and shadows)
LONGTAIL_MIXTURE = 900  # the long-tailed mixture's subpopulations
LONGTAIL_SAMPLE = 901  # its training and test draws

# ---- studies: [seed, stream, ...]. One name per draw; a number two studies share names two
# unrelated draws (they never meet in one run).
AUDIT_CURVE_EXAMPLES = 11  # audit: the examples scored per shadow cap
LESDE_FIT_DATA = 11  # lesde: the fit experiment's training subset
LESDE_STAB_N_TRAIN = 13  # lesde: the stability experiment's training subset
ATTRIBUTE_SELF_INFLUENCE = 31  # attribute: the self-influence examples
ATTRIBUTE_REMOVAL = 53  # attribute: the removal study's targets
ELASTICITY_PROBES = 61  # elasticity: probes of the ratio experiment ([seed, r, 61])
ELASTICITY_PAIRS = 62  # elasticity: samples of a class pair ([seed, r, 62, a, b])
NOISE_CSR_PROBES = 11  # noise: the validation inputs the critical-sample part probes
LASS = 16  # per model [seed, replicate, LASS, t]: LASS search noise (measures.callbacks)
LESDE_PHASE = 1  # lesde: a phase-diagram cell's simulation ([seed, 1, drift, ratio, noise])
LESDE_SCAN = 2  # lesde: a threshold-scan cell's start and simulation ([seed, 2, drift, ...])
LESDE_FIT_SIMULATION = 3  # lesde: a fitted model's simulations ([seed, 3, model, 6])
LESDE_PERMUTATIONS = 100  # lesde: permuted-mask floors, numpy seeds seed + 100 + p (an offset)
ATTRIBUTE_CEILING = 37  # attribute: the seed of the held-out masks' second replicate (ceiling)
MEMORIZE_NULL = 47  # memorize: the permuted masks of the noise floors ([seed, 47])
DP_AUDIT_SPLIT = 71  # audit --dp: which models select the guesses, which are evaluated
