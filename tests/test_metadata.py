"""Search metadata (issue 14): roles, encodings, ranges and one meaning of `activation`.

Every built-in is checked against the rules (ranges inside domains, activations agreeing with the
differentiated input's encoding, task tags agreeing with the README table); the spec statements
`role`, `encoding` and `range` are checked for what they set and for their errors; and the
search space is consumed by Optuna.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl.metadata import ENCODINGS, ROLES

README = Path(__file__).resolve().parent.parent / "README.md"

# The model's last layer each encoding of the differentiated input calls for.
LAST_LAYER = {"logits": {"identity"}, "probability": {"sigmoid", "softmax"},
              "log_probability": {"log_softmax"}}  # fmt: skip


@pytest.mark.parametrize("name", lossdsl.available())
def test_builtin_metadata_is_consistent(name: str) -> None:
    loss = lossdsl.get(name)
    for p in loss.params:
        assert p.role in ROLES
        assert (p.search is not None) == (p.role == "hyperparameter"), p
        if p.search is not None:
            s = p.search
            assert s.low < s.high
            assert p.bounds is None or (p.bounds.contains(s.low) and p.bounds.contains(s.high))
            assert not s.log or s.low > 0
            assert s.low <= p.default <= s.high, p
    for i in loss.input_info:
        assert i.encoding in ENCODINGS
        assert (i.kind == "int") <= (i.encoding in ("label", "pm1", "binary"))
    first = next(i for i in loss.input_info if i.differentiated)
    assert loss.activation in LAST_LAYER.get(first.encoding, {loss.activation})


def test_activation_means_the_models_last_layer() -> None:
    # Both cross-entropies take what the model outputs directly: logits and probabilities.
    assert lossdsl.get("cross_entropy").activation == "identity"
    assert lossdsl.get("bce").activation == "sigmoid"
    assert lossdsl.get("nll").activation == "log_softmax"
    encodings = {i.name: i.encoding for i in lossdsl.get("hinge").input_info}
    assert encodings == {"pred": "real", "target": "pm1"}
    roles = {p.name: p.role for p in lossdsl.get("sparse_cross_entropy").params}
    assert roles == {"weight": "convention", "ignore_index": "convention",
                     "label_smoothing": "hyperparameter"}  # fmt: skip
    delta = lossdsl.get("huber").params[0]
    assert (delta.bounds.low, delta.bounds.low_closed) == (0.0, False)
    assert delta.search is not None
    assert delta.search.log


def test_readme_catalog_table_agrees_with_task_tags() -> None:
    text = README.read_text(encoding="utf-8").split("## The built-in catalog")[1]
    rows = re.findall(r"^\| ([a-z /]+) \| (`.*)\|$", text, flags=re.M)
    listed = {}
    for label, names in rows:
        for name in re.findall(r"`(\w+)`", names):
            listed[name] = set(label.split(" / "))
    assert set(listed) == {n for n in lossdsl.available() if lossdsl.is_builtin(n)}
    for name, tasks in listed.items():
        assert lossdsl.get(name).task in tasks, name


SPEC = """
loss asym_meta(score, y: int in [-1, 1]; k: real = 2.0 > 0, flip: int = 0 in [0, 1],
               scale: real = 1.0, skip: int = -1):
    role scale convention
    encoding score logits
    range k in [0.5, 8] log
    return where(flip == 1, 1, k) * softplus(-y * score) * scale + where(y == skip, 0, 0)
"""


def test_spec_statements_set_metadata() -> None:
    loss = lossdsl.compile(SPEC)
    assert {i.name: i.encoding for i in loss.input_info} == {"score": "logits", "y": "pm1"}
    params = {p.name: p for p in loss.params}
    assert (params["k"].search.low, params["k"].search.high, params["k"].search.log) == (
        0.5, 8.0, True)  # fmt: skip
    assert params["flip"].role == "switch"
    assert params["scale"].role == "convention"
    assert params["skip"].role == "convention"
    assert loss.activation == "identity"
    # The canonical layout keeps the statements.
    from lossdsl.format import format_spec
    from lossdsl.parse import parse_spec

    again = lossdsl.compile(format_spec(parse_spec(SPEC, "<string>")))
    assert again.params == loss.params
    assert again.input_info == loss.input_info


HEAD = "loss m(pred, target in [0, 1]; k: real = 1.0 > 0, eps: real = 1e-6 > 0):\n"
BAD = [
    ("    role k knob\n", "unknown role 'knob'", "hyperparameter"),
    ("    role kk switch\n", "names no parameter 'kk'", "'k'"),
    ("    encoding k logits\n", "names no input 'k'", "pred"),
    ("    encoding target probabilty\n", "unknown encoding", "probability"),
    ("    range k in [-1, 2]\n", "must lie in its domain", None),
    ("    range k in [0.5, 2] logg\n", "unknown scale", "log"),
    ("    range k > 2\n", "interval", None),
    ("    range eps in [0.1, 1]\n", "on a convention", "hyperparameter"),
    ("    role k switch\n    role k convention\n", "a second 'role k'", None),
    ("    encoding pred logits\n    activation sigmoid\n", "contradicts 'pred'", "identity"),
]


@pytest.mark.parametrize(("body", "message", "hint"), BAD, ids=[b[1] for b in BAD])
def test_metadata_errors_point_at_the_statement(body: str, message: str, hint: str | None) -> None:
    with pytest.raises(lossdsl.LossDSLError) as info:
        lossdsl.check_source(HEAD + body + "    return k * (pred - target)^2 + eps\n")
    text = str(info.value)
    assert message in text
    assert ":3:" in text or ":2:" in text  # the line of the statement, not the loss header
    if hint is not None:
        assert "hint:" in text
        assert hint in text.split("hint:")[1]


def test_search_space_per_task() -> None:
    spaces = {s.loss: s for s in lossdsl.search_space("binary")}
    assert set(spaces) == set(lossdsl.available(task="binary"))
    focal = {d.name: d for d in spaces["sigmoid_focal"].dimensions}
    assert (focal["gamma"].low, focal["gamma"].high) == (0.0, 5.0)
    assert dict(spaces["hinge"].encodings)["target"] == "pm1"
    ce = {d.name for s in lossdsl.search_space("multiclass") for d in s.dimensions}
    assert "ignore_index" not in ce
    assert "weight" not in ce
    with pytest.raises(lossdsl.UnknownLossError, match="regression"):
        lossdsl.search_space("regresion")


def test_optuna_tunes_a_loss_and_its_parameters() -> None:
    optuna = pytest.importorskip("optuna")
    from lossdsl.research.search import suggest_loss

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(0)
    target = rng.normal(size=64)
    chosen: list[tuple[str, dict[str, float]]] = []

    def objective(trial: optuna.Trial) -> float:
        loss, params = suggest_loss(trial, "regression", losses=["huber", "quantile"])
        chosen.append((loss.name, params))
        return float(loss(np.zeros(64), target, **params))

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(objective, n_trials=12)
    assert {name for name, _ in chosen} == {"huber", "quantile"}
    for name, params in chosen:
        info = {p.name: p for p in lossdsl.get(name).params}
        for key, value in params.items():
            s = info[key].search
            assert s is not None
            assert s.low <= value <= s.high
    assert study.best_params["loss"] in ("huber", "quantile")


REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def test_regression_activation_of_logits_is_an_error() -> None:
    path = REGRESSIONS / "metadata-activation-of-logits.loss"
    with pytest.raises(lossdsl.SpecDomainError) as info:
        lossdsl.check_source(path.read_text(encoding="utf-8"), str(path))
    assert ":7:" in str(info.value)  # the activation statement
    assert "write 'activation identity'" in str(info.value)


def test_regression_quantile_is_tagged_regression() -> None:
    path = REGRESSIONS / "metadata-task-tag-quantile.loss"
    (old,) = lossdsl.check_source(path.read_text(encoding="utf-8"), str(path))
    assert old.task == "quantile"
    assert lossdsl.get("quantile").task == "regression"
    assert "quantile" in lossdsl.available(task="regression")
