"""xent_fast: softmax, cross-entropy losses and their gradients over NumPy arrays,
computed by compiled OpenMP kernels in one pass over each row, and batch scoring
(``score``: loss, accuracy, top-k, entropy and calibration of a classifier's logits).

Classes lie on the last axis; float32 and float64 are computed natively. See
``xent_fast.info`` for the information measures (surprisal, entropy, cross-entropy
and KL divergence of probability vectors).
"""

from . import info
from ._binary import (
    binary_cross_entropy,
    binary_cross_entropy_and_grad,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_and_grad,
    sigmoid_focal_loss,
    sigmoid_focal_loss_and_grad,
)
from ._config import __version__, config, show_config
from ._cross_entropy import cross_entropy, cross_entropy_and_grad
from ._distill import distillation_loss, distillation_loss_and_grad
from ._linear import linear_cross_entropy, linear_cross_entropy_and_grad
from ._score import Scores, ScoreTotals, fit_temperature, score, temperature_loss
from ._softmax import log_softmax, logsumexp, softmax

__all__ = [
    "__version__",
    "config",
    "show_config",
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_and_grad",
    "distillation_loss",
    "distillation_loss_and_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_and_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_and_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_and_grad",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_and_grad",
    "score",
    "fit_temperature",
    "temperature_loss",
    "Scores",
    "ScoreTotals",
    "info",
]
