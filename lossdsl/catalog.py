"""The catalog page of the built-in losses (docs/losses.md), generated from the specs themselves.

`render_catalog` groups every built-in loss by task and prints, for each, its header comment
(formula, input domains, the framework function it matches), its parameters with defaults and
domains, and the derivation as `Loss.explain()` prints it. The spec text comes from the checked
definitions the registry returns; this module reads no files and writes none.
"""

from __future__ import annotations

from lossdsl import api, ir
from lossdsl.check import TASKS

_TITLE = """\
# Built-in losses

Generated from `specs/*.loss` by `lossdsl.catalog.render_catalog()` (`lossdsl catalog`);
do not edit by hand. Each entry shows the spec's header comment (formula, input domains and
the framework function it matches), its parameters, and the value, gradient and Hessian
diagonal that lossdsl derives (`Loss.explain()`; `qN` are the lifted row and batch aggregates).
Parameters are kernel arguments: pass them per call, e.g. `loss(pred, target, delta=0.5)`.
"""

_TORCH = "torch"
_KERAS = "keras 3 (jax backend)"
_OPTAX = "optax"


# Framework functions -> the loss and options that reproduce them, what still differs, and
# what the row is tested against (kept by hand: each spec names its own counterpart in its
# header comment).
_FRAMEWORKS: tuple[tuple[str, str, str, str], ...] = (
    (
        "torch `mse_loss`, `l1_loss` (`weight=`)",
        "`mse`, `l1` with `sample_weight=`",
        "none: torch's weighted mean also divides by the weight sum",
        _TORCH,
    ),
    (
        "torch `huber_loss(weight=)`",
        "`weighted_huber` (the weight is an input)",
        "none: its mean divides by N",
        _TORCH,
    ),
    (
        "torch `MultiLabelSoftMarginLoss(weight=)`",
        "`multilabel_soft_margin`",
        "none",
        _TORCH,
    ),
    (
        "torch `BCEWithLogitsLoss(pos_weight=vector)` on (N, C)",
        "`multilabel_soft_margin(pos_weight=)`",
        "`mean` equal; torch's `sum` is C times ours, its `none` keeps N x C elements "
        "(ours: row means)",
        _TORCH,
    ),
    (
        "torch `MultiLabelMarginLoss`",
        "not expressible",
        "its targets are lists of class indices and it sums over pairs of classes (two axes; "
        "the language has one): use `multilabel_soft_margin` on 0/1 target rows, or "
        "`multi_margin` for one label per sample",
        "",
    ),
    (
        "Keras `CategoricalCrossentropy` (`from_logits=False`)",
        "`categorical_crossentropy`",
        "none (renormalised, clipped at 1e-7)",
        _KERAS,
    ),
    (
        "Keras `CategoricalCrossentropy(from_logits=True)`",
        "`cross_entropy`",
        "none",
        _KERAS,
    ),
    (
        "Keras `SparseCategoricalCrossentropy` (`from_logits=False`)",
        "`sparse_categorical_crossentropy`",
        "`ignore_class=`: pass `sample_weight` 0 instead",
        _KERAS,
    ),
    (
        "Keras `SparseCategoricalCrossentropy(from_logits=True)`",
        "`sparse_cross_entropy`",
        "none",
        _KERAS,
    ),
    (
        "Keras `KLDivergence`",
        "`kl_divergence`",
        "none (both inputs clipped at 1e-7); at a probability of exactly 1 (the clip's bound) "
        "the gradient passes whole, as Keras on TensorFlow and torch (on jax: half)",
        _KERAS,
    ),
    (
        "Keras `BinaryFocalCrossentropy`",
        "`binary_focal_crossentropy`",
        "on (N, K) inputs Keras averages the K columns first; `from_logits=True` is not a "
        "parameter",
        _KERAS,
    ),
    (
        "Keras `CategoricalFocalCrossentropy`",
        "`categorical_focal_crossentropy`",
        "`from_logits=True` is not a parameter",
        _KERAS,
    ),
    (
        "Keras `BinaryCrossentropy(label_smoothing=)` (`from_logits=False`)",
        "`bce(label_smoothing=)`",
        "Keras clips the probability to [1e-7, 1 - 1e-7], `bce` (torch's) clamps each log at "
        "-100: equal for probabilities inside the clip",
        _KERAS,
    ),
    (
        "Keras `BinaryCrossentropy(from_logits=True, label_smoothing=)`",
        "`bce_with_logits(label_smoothing=)`; on (N, C) `multilabel_soft_margin`",
        "none",
        _KERAS,
    ),
    (
        "Keras `Hinge`, `SquaredHinge`, `CategoricalHinge`, `LogCosh`, `CosineSimilarity`, "
        "`MeanAbsolutePercentageError`, `MeanSquaredLogarithmicError`",
        "`hinge`, `squared_hinge`, `categorical_hinge`, `log_cosh`, `cosine_similarity`, "
        "`mape`, `msle`",
        "none (labels -1/1 for the hinges: Keras also converts 0/1)",
        _KERAS,
    ),
    (
        "Keras `metrics.RootMeanSquaredError`",
        "`rmse`",
        "a metric: reduction `mean` only",
        _KERAS,
    ),
    (
        "Keras `Dice`, `Tversky(alpha=a, beta=b)` (`axis=None`)",
        "`dice(smooth=0, eps=1e-7)`, `tversky(alpha=b, beta=a, smooth=0, eps=1e-7)`",
        "Keras returns one number for the batch (our `mean`); Keras' Tversky `alpha` weighs "
        "missed positives (our `beta`); other `axis=` values (per-image sums): one call per "
        "image",
        _KERAS,
    ),
    (
        "Keras reductions",
        "`sum_over_batch_size` is `mean`",
        "element-wise losses on (N, C) inputs: Keras averages each row first, so its "
        "`sum` is ours divided by C",
        _KERAS,
    ),
    (
        "optax `cosine_distance(epsilon=)`",
        "`cosine_distance`",
        "none (a zero vector gives NaN at epsilon 0, as in Optax)",
        _OPTAX,
    ),
    (
        "optax `cosine_similarity(epsilon=)`",
        "`-cosine_similarity(eps=)`",
        "sign: lossdsl's is Keras' (a loss)",
        _OPTAX,
    ),
    (
        "optax `hinge_loss`",
        "`hinge`",
        "at the kink the gradient is -target (TensorFlow's); jax splits it",
        _OPTAX,
    ),
    (
        "optax `multiclass_hinge_loss`",
        "`multiclass_hinge`",
        "labels are passed one-hot",
        _OPTAX,
    ),
    (
        "optax `poly_loss_cross_entropy` (soft labels)",
        "`poly_cross_entropy`",
        "none",
        _OPTAX,
    ),
    (
        "optax `triplet_margin_loss`",
        "`triplet_margin_optax`",
        "a tie at the hinge gives the active side's gradient (JAX: half)",
        _OPTAX,
    ),
    (
        "optax `dice_loss` (`class_weights`, `smooth`, `alpha`, `beta`, `reduction`, "
        "`ignore_background`, `apply_softmax`)",
        "`dice_loss` (`reduction='sum'` is `sum_classes=1`)",
        "one image per call (Optax sums each image's spatial axes); `reduction='none'` "
        "(per-class values): one class at a time, `class_weights` one-hot and "
        "`sum_classes=1`; no Hessian diagonal (softmax inside per-class totals)",
        _OPTAX,
    ),
    (
        "optax `binary_dice_loss(smooth=)`",
        "`binary_dice_loss`",
        "one image per call; `apply_sigmoid=False` (Optax accepts only 0/1 predictions "
        "there): on probabilities use `dice(smooth=2 * smooth)`",
        _OPTAX,
    ),
    (
        "optax `multiclass_generalized_dice_loss`",
        "`multiclass_generalized_dice_loss`",
        "one image per call (on several images Optax takes the class frequencies over all of "
        "them); no Hessian diagonal",
        _OPTAX,
    ),
    (
        "Liger `LigerCrossEntropyLoss` (`lse_square_scale`, `softcap`, `label_smoothing`, "
        "`ignore_index`)",
        "`liger_cross_entropy`",
        "no class weights (Liger divides their z-loss by the token count, the rest by the "
        "weight sum); `return_z_loss` and a returned lse (second outputs) are not "
        "expressible: a loss returns one value per sample; compute the lse with a second "
        "spec, `return logsumexp[C](logits)` with reduction `none`",
        "a transcription of its source",
    ),
)
_FRAMEWORKS_HEAD = """\
## Framework flavours

Where to find a framework's loss, and what still differs. Each row is tested in float64, value
and gradient, every reduction and option it names, against the library the last column
gives: the real functions of PyTorch, Keras 3 (on its jax backend) and Optax
(tests/test_catalog.py, tests/test_flavours_keras.py, tests/test_flavours_optax.py).
"""


def render_catalog() -> str:
    """Markdown for every built-in loss, grouped by task in the order of `check.TASKS`.

    Returns:
        The whole page, ending in a newline; byte-identical across runs.
    """
    names = [n for n in api.available() if api.is_builtin(n)]
    losses = [api.get(n) for n in names]
    parts = [_TITLE, _index(losses), _frameworks()]
    for task in TASKS:
        group = [loss for loss in losses if loss.task == task]
        if group:
            parts.append(f"## {task}\n")
            parts += [_entry(loss) for loss in group]
    return "\n".join(parts)


def _index(losses: list[api.Loss]) -> str:
    rows = ["| loss | task | matches |", "|---|---|---|"]
    for loss in losses:
        matches = counterpart(loss).replace("|", "\\|")
        rows.append(f"| [`{loss.name}`](#{loss.name}) | {loss.task} | {matches} |")
    return "\n".join(rows) + "\n"


def _frameworks() -> str:
    rows = [
        "| framework function | lossdsl | remaining deviation | checked against |",
        "|---|---|---|---|",
    ]
    rows += [f"| {a} | {b} | {c} | {d or 'n/a'} |" for a, b, c, d in _FRAMEWORKS]
    return _FRAMEWORKS_HEAD + "\n" + "\n".join(rows) + "\n"


def _entry(loss: api.Loss) -> str:
    d = loss.definition
    lines = [f"### {loss.name}\n", f"{d.summary}\n" if d.summary else ""]
    lines.append(f"Inputs: {_inputs(d)}; differentiated: {', '.join(d.wrt)}. ")
    lines.append(f"Model's last layer: `{d.activation}`; default reduction: `{d.reduction}`.\n")
    lines += ["```text", header_comment(d), "```", ""]
    if d.params:
        lines += [
            "| parameter | kind | default | domain | role | search range |",
            "|---|---|---|---|---|---|",
        ]
        for p in loss.params:
            kind = f"{p.kind}[{p.axis}]" if p.axis else p.kind
            s = p.search
            where = f"[{s.low:g}, {s.high:g}]" + (" log" if s.log else "") if s else ""
            cells = [f"`{p.name}`", kind, f"{p.default:g}", p.domain or "any", p.role, where]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["```text", loss.explain(), "```", ""]
    return "\n".join(lines)


def _inputs(d: ir.LossDef) -> str:
    out = []
    for i in d.inputs:
        text = i.name + (f"[{i.axis}]" if i.axis else "") + (": int" if i.kind == "int" else "")
        if i.domain is not None:
            text += f" {i.domain}"
        out.append(f"`{text}` ({i.encoding})")
    return ", ".join(out)


def header_comment(d: ir.LossDef) -> str:
    """The `#` block directly above the loss, without the markers (indentation kept)."""
    lines = d.source.splitlines()
    out: list[str] = []
    i = d.span.line - 2
    while i >= 0 and lines[i].lstrip().startswith("#"):
        out.append(lines[i].lstrip()[1:].removeprefix(" ").rstrip())
        i -= 1
    return "\n".join(reversed(out))


def counterpart(loss: api.Loss) -> str:
    """The framework function a loss reproduces: its header's `Matches` line up to the first
    clause break ("" where the header names none). `lossdsl list` and the index show it."""
    text = " ".join(line.strip() for line in header_comment(loss.definition).splitlines())
    if "Matches " not in text:
        return ""
    return _first_clause(text.split("Matches ", 1)[1])


def _first_clause(text: str) -> str:
    """`text` up to the first ',', ';', ' (' or sentence end outside parentheses."""
    depth = 0
    for k, ch in enumerate(text):
        if ch == "(" and depth == 0 and text[k - 1 : k] == " ":
            return text[: k - 1]
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and (ch in ",;" or text[k : k + 2] == ". " or text[k:] == "."):
            return text[:k]
    return text.strip()
