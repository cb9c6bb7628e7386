"""The estimators a pipeline spec may name: import paths, checked before anything is imported.

Neither a spec nor an LLM can bring code: a candidate names one of these paths, and the
policy file may narrow the list further (``training.estimators``) but never widen it.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ALLOWED_ESTIMATORS", "Task"]

Task = Literal["classification", "regression"]

ALLOWED_ESTIMATORS: dict[str, Task] = {
    "sklearn.linear_model.LogisticRegression": "classification",
    "sklearn.linear_model.RidgeClassifier": "classification",
    "sklearn.linear_model.SGDClassifier": "classification",
    "sklearn.tree.DecisionTreeClassifier": "classification",
    "sklearn.ensemble.RandomForestClassifier": "classification",
    "sklearn.ensemble.ExtraTreesClassifier": "classification",
    "sklearn.ensemble.GradientBoostingClassifier": "classification",
    "sklearn.ensemble.HistGradientBoostingClassifier": "classification",
    "sklearn.naive_bayes.GaussianNB": "classification",
    "sklearn.neighbors.KNeighborsClassifier": "classification",
    "sklearn.dummy.DummyClassifier": "classification",
    "sklearn.linear_model.LinearRegression": "regression",
    "sklearn.linear_model.Ridge": "regression",
    "sklearn.linear_model.Lasso": "regression",
    "sklearn.linear_model.ElasticNet": "regression",
    "sklearn.tree.DecisionTreeRegressor": "regression",
    "sklearn.ensemble.RandomForestRegressor": "regression",
    "sklearn.ensemble.ExtraTreesRegressor": "regression",
    "sklearn.ensemble.GradientBoostingRegressor": "regression",
    "sklearn.ensemble.HistGradientBoostingRegressor": "regression",
    "sklearn.neighbors.KNeighborsRegressor": "regression",
    "sklearn.dummy.DummyRegressor": "regression",
}
"""Every estimator a spec may use, with the task it serves."""
