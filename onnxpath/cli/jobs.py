"""From parsed flags (the namespace `o` a command receives) to the library's objects: the
Explainer, the preprocessing recipe, the Style, the method options, the Job and its inputs.

Each function checks its flags and raises `UsageError` with the flag's name, so a command
reads parse → call the library → exit code. The order of the checks is the order in which
`attribute` has always reported problems (the first one wins), which the tests pin down.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from onnxpath.cli._common import (
    build_preprocess,
    make_explainer,
    parse_floats,
    parse_scale,
    parse_size,
)
from onnxpath.cli.declare import spelling
from onnxpath.cli.options import METHOD_OPTIONS, SURROGATE
from onnxpath.errors import OnnxPathError, UsageError
from onnxpath.explainer import Explainer
from onnxpath.io.folder import fill_from_folder
from onnxpath.io.image import model_size
from onnxpath.io.inputs import expand_inputs
from onnxpath.io.labels import model_labels, read_labels, resolve_target
from onnxpath.io.modality import takes_images
from onnxpath.io.outputs import check_writable
from onnxpath.io.preprocess import Preprocess
from onnxpath.io.render import COLORMAPS, NORMALISATIONS, REDUCTIONS
from onnxpath.io.table import read_names
from onnxpath.io.text import load_tokenizer
from onnxpath.methods import resolve_method, resolve_methods
from onnxpath.pathways.network import resolve_prune_percent
from onnxpath.run.job import Job, Style, parse_target

TOKEN_REDUCTIONS = ("sum", "abs-sum", "l2")


def check_choice(value: str, choices, option: str) -> str:
    """A flag with a fixed set of values, taken as plain text so that the error names the
    flag and lists the choices in onnxpath's words rather than click's."""
    if value not in choices:
        raise UsageError(f"unknown {option} '{value}'; choose from {', '.join(choices)}")
    return value


def method_list(o: SimpleNamespace) -> tuple[list[str], dict]:
    """`--method a,b`: the registered names of the methods (Captum's names and other
    spellings resolved, as is --fallback on `o`) and the options an alias implies (saliency:
    absolute, i.e. --abs)."""
    if getattr(o, "fallback", None) is not None:
        o.fallback = resolve_method(o.fallback)
    return resolve_methods(o.method)


def is_top_k(text: str | None, labels: list[str] | None) -> bool:
    lowered = (text or "").strip().lower()
    return (lowered.startswith("top") and lowered[3:].isdigit()
            and lowered not in [label.lower() for label in labels or []])


def one_class(text: str | None, labels: list[str] | None, command: str) -> int | None:
    """--target of the commands that explain one class (pathway, check-grad): a class index
    or a label; None: the prediction."""
    if is_top_k(text, labels):
        raise UsageError(f"--target {text.strip()}: {command} explains one class; give a class "
                         "index or label (topK is attribute's)")
    target = resolve_target(text.strip() if text else text, labels)
    if target is not None and target < 0:
        raise UsageError(f"--target must be a class index >= 0, got {target}")
    return target


def check_top_k(explainer: Explainer, top_k: int | None) -> None:
    """`--target topK` asks for K classes: more than the model has is an error, not K quietly
    cut to the count. The count is known without a run when the input's shape is fixed (else
    the run explains every class there is)."""
    dims = explainer.input_shape[1:]
    if not top_k or not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        return
    try:
        classes = Explainer.class_count(explainer.engine((1, *dims)))
    except OnnxPathError:  # the run reports the model's problems as it always has
        return
    if classes is not None and top_k > classes:
        raise UsageError(f"--target top{top_k} asks for {top_k} classes; the model has "
                         f"{classes}")


def style_from(o: SimpleNamespace) -> Style:
    """The RENDERING flags."""
    style = Style(check_choice(o.reduce, REDUCTIONS, "--reduce"),
                  check_choice(o.colormap, COLORMAPS, "--colormap"),
                  check_choice(o.normalise, NORMALISATIONS, "--normalise"), o.percentile,
                  o.alpha)
    if not 0.0 <= o.alpha <= 1.0:
        raise UsageError(f"--alpha must lie in [0, 1], got {o.alpha}")
    if o.percentile is not None and not 0.0 < o.percentile <= 100.0:
        raise UsageError(f"--percentile must lie in (0, 100], got {o.percentile}")
    return style


def parse_provider_options(items: list[str] | None) -> dict[str, str] | None:
    """`--provider-option KEY=VALUE`, repeatable."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--provider-option takes KEY=VALUE, got '{item}'")
        options[key.strip()] = value.strip()
    return options or None


def explainer_from(o: SimpleNamespace, device: str | None = None,
                   provider_options: dict[str, str] | None = None) -> Explainer:
    """The Explainer of the RUNTIME flags, --output and, where the command has them, the
    other INTAKE flags (--wrt, --target-index, --region). `device` overrides --device."""
    if o.threads is not None and o.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {o.threads} (leave it out for "
                         "ONNX Runtime's default)")
    return make_explainer(o.model, device=device or o.device, threads=o.threads,
                          cache=not o.no_cache, output=o.output, wrt=getattr(o, "wrt", None),
                          target_index=getattr(o, "target_index", None),
                          region=getattr(o, "region", None), provider_options=provider_options,
                          precision=getattr(o, "precision", None))


def recipe_from(o: SimpleNamespace, explainer: Explainer) -> Preprocess:
    """The preprocessing recipe of the PREPROCESSING flags (a flag a command lacks keeps the
    recipe's value)."""
    get = vars(o).get
    return build_preprocess(explainer, o.preset, parse_size(o.size),
                            parse_floats(o.mean, "--mean"), parse_floats(o.std, "--std"),
                            config=get("preprocess"), resize=get("resize"), crop=get("crop"),
                            scale=parse_scale(get("scale")), bgr=get("bgr"),
                            layout=get("layout"), gray=get("gray"))


def pathway_options(o: SimpleNamespace) -> dict:
    """The pathway method's keyword options from the PATHWAY flags (attribute's or
    pathway's: the same names)."""
    return {"prune_percent": parse_prune(o.prune), "keep": o.keep, "selection": o.selection,
            "layers": tuple(op.strip() for op in o.layers.split(",") if op.strip()),
            "layer_regex": o.layer_regex, "per_layer": o.per_layer}


def parse_prune(text: str | None) -> float | str | None:
    """--prune: a percentage, or auto / auto:T (checked by the pathway's own resolver)."""
    if text is None or text.strip().lower().startswith("auto"):
        return text if text is None else resolve_prune_percent(text, None)
    try:
        return float(text)
    except ValueError as err:
        raise UsageError(f"--prune takes a percentage in [0, 100], auto or auto:T, got "
                         f"'{text}'") from err


# Every method option flag, read from its declaration, so a flag added there reaches the
# methods with no second list to keep in step.
METHOD_FLAGS = tuple(flag.name for flag in (*METHOD_OPTIONS, *SURROGATE))
FLAG_OF = {flag.name: spelling(flag) for flag in (*METHOD_OPTIONS, *SURROGATE)}


def method_options(o: SimpleNamespace) -> dict:
    """Every method's keyword options: --abs, the METHOD_OPTIONS and SURROGATE flags given
    (None means the method's own default, so they are left out) and the PATHWAY flags."""
    given = {name: getattr(o, name) for name in METHOD_FLAGS}
    options = {k: v for k, v in given.items() if v is not None}
    check_option_values(options, lambda key: FLAG_OF.get(key, f"--{key.replace('_', '-')}"))
    return {"absolute": o.absolute, **options, **pathway_options(o)}


# The options that count something (at least 1), and those that must lie above 0: a value
# outside is an error, never quietly taken for another (0 rows per run, a negative sigma).
COUNTS = ("steps", "samples", "internal_batch_size", "masks", "cells")
POSITIVE = ("kernel_width",)


def check_option_values(options: dict, flag) -> None:
    """UsageError for a method option out of its range; `flag(key)` names it (attribute: the
    flag, evaluate: --set KEY)."""
    for key, value in options.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key in COUNTS and value < 1:
            raise UsageError(f"{flag(key)} must be at least 1, got {value:g}")
        if key in POSITIVE and not value > 0:
            raise UsageError(f"{flag(key)} must be above 0, got {value:g}")
        if key == "probability" and not 0 < value <= 1:
            raise UsageError(f"{flag(key)} must lie in (0, 1], got {value:g}")
    noise = str(options.get("noise", "1")).strip()
    try:
        negative = not float(noise.removesuffix("%")) > 0
    except ValueError:
        negative = False  # smoothgrad names the form it takes
    if negative:
        raise UsageError(f"{flag('noise')} must be above 0 (a sigma, or a percentage of the "
                         f"input range), got '{noise}'")


def check_npz(npz: Path | None) -> None:
    """--npz is written as the batch goes, so it must be a local file in a writable folder."""
    if npz is None:
        return
    scheme = str(npz).split("/", 1)[0]  # Path turned s3://b/m.npz into s3:/b/m.npz
    if scheme.endswith(":") and len(scheme) > 2:  # not a Windows drive
        raise UsageError(f"--npz must be a local file, got '{npz}' (use --out for URLs)")
    check_writable(npz.parent, "--npz")


def input_paths(o: SimpleNamespace, explainer: Explainer, prep: Preprocess,
                out) -> list[Path]:
    """The inputs attribute runs on (never its own --out folder), checked against the
    model: some for an image model, and a --size that fits it."""
    paths = expand_inputs(o.inputs or [], exclude=[out] if isinstance(out, Path) else [])
    images = takes_images(explainer, paths, o.text is not None or o.tokenizer is not None)
    if not paths and (images or o.text is None):
        raise UsageError("no inputs found (give images, .npy files, folders, globs or -)"
                         if images else "no inputs found (give files, folders, globs, - or "
                         "--text)")
    if o.sample_rate is not None and o.sample_rate < 1:
        raise UsageError(f"--sample-rate must be at least 1 Hz, got {o.sample_rate}")
    if o.token_reduce not in TOKEN_REDUCTIONS:
        raise UsageError(f"--token-reduce takes sum, abs-sum or l2, got '{o.token_reduce}'")
    if images and len(explainer.input_shape) == 4 and any(
            p.suffix.lower() not in (".npy", ".npz") for p in paths):
        model_size(explainer.input_shape, prep, prep.layout)  # --size problems stop here
    return paths


def labels_of(o: SimpleNamespace, explainer: Explainer) -> list[str] | None:
    """--labels, else a model folder's config.json `id2label` (the folder's tokenizer and
    preprocessing fill their flags too, see io/folder.py), else the model's metadata."""
    fill_from_folder(o)
    if getattr(o, "labels", None):
        return read_labels(o.labels)
    return getattr(o, "folder_labels", None) or model_labels(explainer.proto)


def job_from(o: SimpleNamespace, explainer: Explainer, methods: list[str], style: Style,
             out) -> tuple[Job, list[Path]]:
    """attribute's Job and the inputs it runs on: labels and --target, the recipe, the
    method options, the outputs, the inputs, then the tokenizer and feature names. A model
    folder (Hugging Face Optimum) gives the labels, tokenizer and preprocessing not flagged."""
    labels = labels_of(o, explainer)
    target, top_k = parse_target(o.target, labels)
    if top_k and getattr(o, "target_index", None) is not None:
        raise UsageError("--target topK ranks classes; --target-index already names the one "
                         "output element to explain: give one of them")
    check_top_k(explainer, top_k)
    prep = recipe_from(o, explainer)
    options = method_options(o)
    if out is not None:
        check_writable(out)
    check_npz(o.npz)
    paths = input_paths(o, explainer, prep, out)
    job = Job(methods=methods, target=target, top_k=top_k, options=options, labels=labels,
              fallback=o.fallback, out=out, npz=o.npz, resume=o.resume,
              batch_size=o.batch_size, prep=prep, side_by_side=o.side_by_side, style=style,
              tokenizer=load_tokenizer(o.tokenizer) if o.tokenizer is not None else None,
              text=o.text,
              feature_names=read_names(o.features) if o.features is not None else None,
              sample_rate=o.sample_rate, token_reduce=o.token_reduce)
    return job, paths


def ray_cluster(o: SimpleNamespace):
    """The --engine ray pool (the RAY flags). Imported here, not at the top: the plain CLI
    never imports Ray."""
    from onnxpath.run.ray import Cluster, parse_actors
    if not o.cpus_per_actor > 0:
        raise UsageError(f"--cpus-per-actor must be above 0, got {o.cpus_per_actor:g}")
    if not o.gpus_per_actor >= 0:
        raise UsageError(f"--gpus-per-actor must be 0 or more, got {o.gpus_per_actor:g}")
    timeout = {} if o.ray_timeout is None else {"timeout": o.ray_timeout}
    return Cluster(o.address, parse_actors(o.actors), o.cpus_per_actor, o.gpus_per_actor,
                   **timeout)
