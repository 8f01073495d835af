"""`Score`: run a model over each batch of records and add its score (and version) to them.

The model sees one 2-D array per batch, built by a `Features` list, never one call per
record. `model` is a file path (a scikit-learn estimator saved with joblib, or an `.onnx`
file for ONNX Runtime), loaded once per worker process and reloaded between batches when
the file changes; or a plain function of the array (pickled with the pipeline, so keep it
a module-level function).

>>> import numpy as np
>>> def risk(X): return X[:, 0] / 100.0
>>> s = Score(risk, ["amount"], version="rules-1")
>>> s.apply([{"amount": 50.0}])
[{'amount': 50.0, 'score': 0.5, 'model_version': 'rules-1'}]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from operators.base import BatchOperator
from operators.features import Feature, Features
from operators.models import METHODS, MODELS, LoadedModel, wrap_callable

Record = dict[str, Any]


@dataclass(frozen=True, eq=False)
class Score(BatchOperator):
    """Score records with a model: adds `output` (a float) and `version_field` (the model version).

    - `model`: path to a joblib (scikit-learn) or `.onnx` file, or a function ndarray -> scores.
    - `features`: a `Features` list, or what builds one (field names, `OneHot`, `Ratio`).
    - `method`: for scikit-learn, "predict_proba" (the positive class), "decision_function",
      "predict", or "auto" (the first of these the estimator has).
    - `check_every_s`: how often a worker looks at the model file for a new version.
    - `version`: the version reported for a function model (default: its name).
    """

    model: str | Callable[[np.ndarray], Any]
    features: Features
    output: str = "score"
    version_field: str | None = "model_version"
    method: str = "auto"
    check_every_s: float = 1.0
    version: str | None = None
    name: str = "score"

    def __init__(self, model: str | Path | Callable[[np.ndarray], Any],
                 features: Features | Iterable[str | Feature], *, output: str = "score",
                 version_field: str | None = "model_version", method: str = "auto",
                 check_every_s: float = 1.0, version: str | None = None, name: str = "score") -> None:
        if method not in METHODS:
            raise ValueError(f"Score(method={method!r}): use one of {', '.join(METHODS)}")
        if check_every_s < 0:
            raise ValueError(f"Score(check_every_s={check_every_s}): must be >= 0")
        feats = features if isinstance(features, Features) else Features(features)
        if isinstance(model, (str, Path)):
            path = Path(model).expanduser().resolve()  # workers may run elsewhere: no cwd games
            if not path.is_file():
                raise ValueError(f"Score(model={str(model)!r}): no such file ({path}); train or copy "
                                 "the model there first")
            model = str(path)
        elif not callable(model):
            raise ValueError(f"Score(model=...) must be a file path or a function of an array, got {model!r}")
        for attr, value in (("model", model), ("features", feats), ("output", output),
                            ("version_field", version_field), ("method", method),
                            ("check_every_s", check_every_s), ("version", version), ("name", name)):
            object.__setattr__(self, attr, value)
        self._check(self.loaded())

    @property
    def model_name(self) -> str:
        """The model's label in metrics: the file name, or the function's name."""
        if isinstance(self.model, str):
            return Path(self.model).name
        return getattr(self.model, "__name__", type(self.model).__name__)

    def loaded(self) -> LoadedModel:
        """The model for the next batch: this process's cached copy, reloaded if the file changed."""
        if isinstance(self.model, str):
            return MODELS.get(self.model, self.method, self.check_every_s)
        return wrap_callable(self.model, self.version or self.model_name)

    def _check(self, model: LoadedModel) -> None:
        """Fail at definition when the model does not take this many features."""
        probe = np.zeros((1, len(self.features.names)))
        try:
            model.predict(probe)
        except Exception as exc:  # noqa: BLE001 - a model can raise anything: say which model fails on the probe
            raise ValueError(f"model {self.model_name} ({model.kind}) fails on {len(self.features.names)} "
                             f"features {self.features.names}: {type(exc).__name__}: {exc}") from None

    def output_fields(self, fields: tuple[str, ...]) -> tuple[str, ...]:
        """The fields after scoring; the features must read fields the records have."""
        missing = [f for f in self.features.fields if f not in fields]
        if missing:
            raise ValueError(f"features read unknown field(s) {', '.join(map(repr, missing))}; "
                             f"records here have: {', '.join(fields)}")
        added = (self.output,) + ((self.version_field,) if self.version_field else ())
        return tuple(fields) + tuple(f for f in added if f not in fields)

    def process_batch(self, records: list[Record]) -> list[Record]:
        model = self.loaded()  # one version for the whole batch
        scores = model.predict(self.features.matrix(records)).tolist()
        if self.version_field is None:
            return [{**r, self.output: s} for r, s in zip(records, scores)]
        return [{**r, self.output: s, self.version_field: model.version} for r, s in zip(records, scores)]

    def tally(self, outputs: list[Record], counts: dict[tuple[str, str], int]) -> None:
        if not outputs:
            return
        name = self.model_name
        if self.version_field is None:
            per_version = {self.loaded().version: len(outputs)}
        else:
            per_version = Counter(r[self.version_field] for r in outputs)
        for version, n in per_version.items():
            counts[(name, version)] = counts.get((name, version), 0) + n
