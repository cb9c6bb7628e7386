"""The competitor: the Adult training stage written by hand against scikit-learn and MLflow.

It does the same work as `mlops-supervisor run examples/adult-income.yaml --stop-after train`
without the supervisor: read the Parquet file, drop fnlwgt and the sensitive features from
the inputs, split 70/15/15 stratified with seed 42, the same preprocessing and the same
grid per candidate with 3-fold stratified CV, refit the best, score the validation split,
and log a parent run plus one nested run per candidate to a fresh SQLite MLflow store
(params, metrics, the two dataset inputs, spec, environment, search results, and the model
with signature, input example and pinned requirements, serialized with skops).

What it skips is what the supervisor adds: the governed graph, the audit chain, data
validation, the PII scan, content-addressed versions and the reference profile.

    python benchmarks/handwritten_train.py WORKDIR
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import skops.io
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import ParameterGrid, StratifiedKFold, cross_validate, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "adult-income.yaml"
SEED = 42
SCORERS = {
    "roc_auc": "roc_auc",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
    "log_loss": "neg_log_loss",
}
CANDIDATES = [
    ("logistic-regression", LogisticRegression, {"max_iter": 1000}, {"C": [0.1, 1.0]}, False),
    (
        "gradient-boosting",
        HistGradientBoostingClassifier,
        {"max_leaf_nodes": 31, "random_state": SEED},
        {"learning_rate": [0.05, 0.1]},
        True,
    ),
]


def pipeline(estimator: object, x: pd.DataFrame, tree: bool) -> Pipeline:
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c])]
    categorical = [c for c in x.columns if c not in numeric]
    encoder = (
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        if tree
        else OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10)
    )
    pre = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            (
                "categorical",
                Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder)]),
                categorical,
            ),
        ]
    )
    return Pipeline([("preprocess", pre), ("model", estimator)])


def main(workdir: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = mlflow.create_experiment("adult-income", artifact_location=(workdir / "mlartifacts").as_uri())
    frame = pd.read_parquet(ROOT / "examples" / "data" / "adult.parquet").drop(columns=["fnlwgt"])
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype("str")
    rest, _test = train_test_split(frame, test_size=0.15, random_state=SEED, stratify=frame["class"])
    train, validation = train_test_split(rest, test_size=0.15 / 0.85, random_state=SEED, stratify=rest["class"])
    features = [c for c in frame.columns if c not in {"class", "sex", "race"}]

    def xy(part: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        x = part[features].copy()
        for column in x.columns:
            if pd.api.types.is_numeric_dtype(x[column]):
                x[column] = x[column].astype("float64")
        return x, (part["class"] == ">50K").to_numpy(int)

    x_train, y_train = xy(train)
    x_val, y_val = xy(validation)
    env = {"python": sys.version.split()[0], "packages": {m: __import__(m).__version__ for m in ("sklearn", "pandas")}}
    requirements = [
        f"{p}=={__import__(m).__version__}"
        for p, m in (
            ("scikit-learn", "sklearn"),
            ("pandas", "pandas"),
            ("numpy", "numpy"),
            ("scipy", "scipy"),
            ("skops", "skops"),
        )
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = {
            ctx: from_pandas(
                part,
                source=str(ROOT / "examples" / "data" / "adult.parquet"),
                targets="class",
                name=f"adult-income-{name}",
                digest=hashlib.sha256(pd.util.hash_pandas_object(part).to_numpy().tobytes()).hexdigest()[:32],
            )
            for ctx, name, part in (("training", "train", train), ("validation", "validation", validation))
        }
    folds = StratifiedKFold(3, shuffle=True, random_state=SEED)
    best_score, best_run = -1.0, ""
    with mlflow.start_run(experiment_id=experiment, run_name="adult-income-train"):
        mlflow.log_text(SPEC.read_text("utf-8"), "spec.yaml")
        mlflow.log_dict(env, "environment.json")
        for name, cls, params, grid, tree in CANDIDATES:
            with mlflow.start_run(experiment_id=experiment, run_name=name, nested=True) as run:
                results = []
                for combo in ParameterGrid(grid):
                    scores = cross_validate(
                        pipeline(cls(**params, **combo), x_train, tree), x_train, y_train, cv=folds, scoring=SCORERS
                    )
                    results.append(
                        {"params": combo, **{f"cv_{m}": float(np.mean(scores[f"test_{m}"])) for m in SCORERS}}
                    )
                best = max(results, key=lambda r: r["cv_roc_auc"])
                model = pipeline(cls(**params, **best["params"]), x_train, tree).fit(x_train, y_train)
                val = {f"val_{m}": float(get_scorer(s)(model, x_val, y_val)) for m, s in SCORERS.items()}
                mlflow.log_params(
                    {
                        "estimator": cls.__name__,
                        "seed": SEED,
                        **{f"model.{k}": v for k, v in {**params, **best["params"]}.items()},
                    }
                )
                mlflow.log_metrics({**{k: v for k, v in best.items() if k.startswith("cv_")}, **val})
                for ctx, dataset in datasets.items():
                    mlflow.log_input(dataset, context=ctx)
                mlflow.log_text(SPEC.read_text("utf-8"), "spec.yaml")
                mlflow.log_dict(env, "environment.json")
                mlflow.log_dict({"combinations": results}, "search_results.json")
                example = x_train.head(5)
                example.columns = pd.Index(list(example.columns), dtype=object)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    signature = infer_signature(x_train.head(200), model.predict(x_train.head(200)))
                mlflow.sklearn.log_model(
                    model,
                    name="model",
                    signature=signature,
                    input_example=example,
                    pip_requirements=requirements,
                    serialization_format="skops",
                    skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
                )
                if val["val_roc_auc"] > best_score:
                    best_score, best_run = val["val_roc_auc"], run.info.run_id
        mlflow.set_tag("best_run_id", best_run)
    print(json.dumps({"best_run_id": best_run, "val_roc_auc": best_score}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
