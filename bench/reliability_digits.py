"""The README's temperature-scaling example: a small, overconfident model of
scikit-learn's bundled digits (8x8 images, 10 classes), its reliability diagram before
and after temperature scaling, and the numbers.

    python bench/reliability_digits.py [OUT.png]

Writes bench/results/reliability_digits.png by default (needs scikit-learn and
matplotlib; no download: the data ship with scikit-learn). The temperature is fitted on
a calibration split and the figures are those of a separate test split.
"""
from __future__ import annotations

import sys
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import xent_fast as xf
from xent_fast._cli import draw_reliability

OUT = Path(__file__).resolve().parent / "results" / "reliability_digits.png"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    x, y = load_digits(return_X_y=True)
    # a small training set and almost no regularisation: a model sure of itself
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, train_size=300, random_state=0)
    x_cal, x_test, y_cal, y_test = train_test_split(x_rest, y_rest, train_size=0.5,
                                                    random_state=0)
    model = LogisticRegression(C=100.0, max_iter=5000).fit(x_train, y_train)
    logits_cal = model.decision_function(x_cal)
    logits_test = model.decision_function(x_test)

    T = xf.fit_temperature(logits_cal, y_cal)
    before = xf.score(logits_test, y_test)
    after = xf.score(logits_test, y_test, temperature=T)
    print(f"T = {T:.3f} (fitted on {len(y_cal)} calibration rows), "
          f"test split of {len(y_test)} rows:")
    print(f"{'':<14}{'before':>10}{'after':>10}")
    b, a = before.summary(), after.summary()
    for key in ("accuracy", "loss", "ece", "brier", "mean_entropy"):
        print(f"{key:<14}{b[key]:>10.4f}{a[key]:>10.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_reliability(before.totals, str(out), after=after.totals, temperature=T,
                     title="scikit-learn digits, logistic regression on 300 images "
                           "(test split)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
