"""The worked examples of the two documents xent_fast grew from, computed by the package.

``python -m xent_fast`` prints them after the build configuration.
"""

from __future__ import annotations

import math

import numpy as np

from . import info
from ._binary import binary_cross_entropy, binary_cross_entropy_with_logits
from ._cross_entropy import cross_entropy, cross_entropy_and_grad
from ._softmax import softmax

LN2 = math.log(2.0)


def seed_examples() -> list[tuple[str, float, float]]:
    """(description, value in nats, value in bits) for each worked example."""
    rows = []

    def add(what: str, nats: float) -> None:
        rows.append((what, float(nats), float(nats) / LN2))

    add("surprisal of meeting a panda, p = 0.001", info.surprisal(0.001))
    add("entropy of [panda, bird, dog] = [0.2, 0.3, 0.5]", info.entropy([0.2, 0.3, 0.5]))
    dog = np.log([0.1, 0.2, 0.7])  # logits whose softmax is the seed's prediction
    add("loss, prediction [0.1, 0.2, 0.7], label dog (index 2)", cross_entropy(dog, 2))
    add("  same, from H(p, q) with p = [0, 0, 1]", info.cross_entropy([0, 0, 1], [0.1, 0.2, 0.7]))
    add("mock question: [0.7, 0.2, 0.1] against [1, 0, 0]",
        info.cross_entropy([1, 0, 0], [0.7, 0.2, 0.1]))
    add("loaded coin: entropy of the truth [0.99, 0.01]", info.entropy([0.99, 0.01]))
    add("loaded coin: cross-entropy of the guess [0.01, 0.99]",
        info.cross_entropy([0.99, 0.01], [0.01, 0.99]))
    add("dog/cat/horse/cheetah: [0.775, 0.116, 0.039, 0.070], label dog",
        cross_entropy(np.log([0.775, 0.116, 0.039, 0.070]), 0))
    add("after training: p(dog) = 0.938 (the seed prints 0.095 bits, i.e. p = 0.936)",
        info.surprisal(0.938))
    add("label smoothing 0.1 on the dog example",
        cross_entropy(dog, 2, label_smoothing=0.1))
    add("mixup target 0.6 dog + 0.4 bird", cross_entropy(dog, np.array([0.0, 0.4, 0.6])))
    add("binary: a cat, predicted cat with q0 = 0.8", binary_cross_entropy(0.8, 1.0))
    add("binary: not a cat, predicted cat with q0 = 0.8", binary_cross_entropy(0.8, 0.0))
    labels = np.array([1.0, 0.0, 1.0])  # multi-label: cat, dog, outdoor
    add("multi-label: sum of 3 binary losses, logits [2, -1, 0.5], labels [1, 0, 1]",
        binary_cross_entropy_with_logits(np.array([2.0, -1.0, 0.5]), labels, reduction="sum"))
    return rows


def print_seed_examples() -> None:
    print("Worked examples of the seed documents")
    print(f"  {'':<76}{'nats':>9}{'bits':>9}")
    for what, nats, bits in seed_examples():
        print(f"  {what:<76}{nats:9.4f}{bits:9.4f}")
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([0.0, 0.0, 1.0])
    _, grad = cross_entropy_and_grad(a, b, reduction="sum")
    print("  gradient of cross-entropy(a, b) = softmax(a) - b, a = [1, 2, 3], b = [0, 0, 1]:")
    print(f"    xent_fast: {np.array2string(grad, precision=4)}"
          f"   softmax(a) - b: {np.array2string(softmax(a) - b, precision=4)}")
