"""numbanorm's scalers in scikit-learn: a Pipeline tuned by GridSearchCV, and per-channel N-D scaling.

1. ``nbn.StandardScaler`` and ``nbn.MinMaxScaler`` are scikit-learn
   estimators (``get_params``/``set_params``, ``clone``, fitted attributes
   ``mean_``, ``scale_``, ...), so they go into a ``Pipeline`` and a grid
   search may even choose between them.  The features here are float32 with
   offsets up to 1e6, where the scalers' float64 statistics keep the digits.
2. ``nbn.StandardScaler(axis=(0, 2, 3))`` reduces over every axis but the
   channels of an ``(N, C, H, W)`` image stack: per-channel statistics, with
   no reshape or transpose; ``partial_fit`` over batches gives the same.

    python examples/sklearn_pipeline.py [--samples 600] [--images 64]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import numbanorm as nbn


def pipeline_search(samples: int, cv: int, seed: int) -> float:
    """Grid search over the scaler and C of a scaler + logistic regression pipeline."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.pipeline import Pipeline

    X, y = make_classification(n_samples=samples, n_features=8, n_informative=5, random_state=seed)
    # raw measurements: large offsets, very different spreads, float32
    X = (X * np.logspace(-1, 2, 8) + np.logspace(0, 6, 8)).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=seed)

    pipe = Pipeline([("scale", nbn.StandardScaler()), ("clf", LogisticRegression())])
    grid = {
        "scale": [nbn.StandardScaler(), nbn.MinMaxScaler(feature_range=(-1, 1))],
        "clf__C": [0.1, 1.0],
    }
    search = GridSearchCV(pipe, grid, cv=cv).fit(X_train, y_train)
    best = search.best_params_
    print(f"best: scale={best['scale']!r}, C={best['clf__C']}; CV accuracy {search.best_score_:.3f}")
    acc = search.score(X_test, y_test)
    print(f"test accuracy {acc:.3f}")
    scaler = search.best_estimator_.named_steps["scale"]
    fitted = "mean_" if hasattr(scaler, "mean_") else "data_min_"
    print(f"fitted {type(scaler).__name__}.{fitted}[:3] = {getattr(scaler, fitted)[:3]}")
    return acc


def per_channel(images: int, seed: int) -> float:
    """Per-channel StandardScaler on an (N, C, H, W) stack; returns the error against float64 NumPy."""
    rng = np.random.default_rng(seed)
    channel_offset = np.array([1e2, 1e4, 1e6], np.float32)[:, None, None]  # e.g. raw sensor counts
    imgs = (channel_offset + rng.standard_normal((images, 3, 16, 16), dtype=np.float32)).astype(np.float32)

    sc = nbn.StandardScaler(axis=(0, 2, 3)).fit(imgs)  # statistics per channel: mean_.shape == (3,)
    z = sc.transform(imgs)  # float32 in, float32 out, same shape
    print(f"per-channel mean_ {sc.mean_}, scale_ {sc.scale_.round(4)}")

    # streaming: batches of images give the same statistics as the whole stack
    st = nbn.StandardScaler(axis=(0, 2, 3))
    for batch in np.array_split(imgs, 5):
        st.partial_fit(batch)
    print(f"partial_fit over 5 batches: max |mean_ difference| = {np.abs(st.mean_ - sc.mean_).max():.1e}")

    x64 = imgs.astype(np.float64)
    ref = (x64 - x64.mean(axis=(0, 2, 3), keepdims=True)) / x64.std(axis=(0, 2, 3), keepdims=True)
    err = float(np.abs(z - ref).max())
    print(f"max |StandardScaler(axis=(0, 2, 3)) - float64 NumPy| = {err:.2e}")
    return err


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=600, help="samples of the classification task (600)")
    p.add_argument("--cv", type=int, default=3, help="cross-validation folds (3)")
    p.add_argument("--images", type=int, default=64, help="images of 3 x 16 x 16 in the stack (64)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("scikit-learn is not installed (pip install scikit-learn): nothing to show")
        return 0
    acc = pipeline_search(args.samples, args.cv, args.seed)
    err = per_channel(args.images, args.seed)
    if not (acc > 0.6 and err < 1e-5):
        print("error: accuracy or per-channel error off", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
