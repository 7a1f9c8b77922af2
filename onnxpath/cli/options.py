"""The flags several commands share, and the groups `attribute` is built from, declared once
(see `declare`) so that a flag means the same, with the same help, wherever it appears.

A flag one command alone has (evaluate's --fractions, check-grad's --directions) is declared
in that command's module, next to the code that reads it. So is a command's own wording or
default of a shared flag where the meaning is the same (export's --out is the one file it
writes, --seed seeds what each command draws at random, ...); tests/cli/test_vocabulary.py
compares every spelling that several commands have and lists those variants with their
reasons. A spelling never means two things: a flag that did was renamed, its old spelling kept
as a hidden alias (`declare.renamed`). The order of the flags in a group is the order `--help`
lists them in.
"""

from __future__ import annotations

from pathlib import Path

import typer

from onnxpath.autodiff.relu_family import RELU_FAMILY
from onnxpath.cli.declare import Flag
from onnxpath.io.preprocess import PRESETS
from onnxpath.io.render import COLORMAPS, NORMALISATIONS, REDUCTIONS
from onnxpath.methods import METHODS
from onnxpath.methods.pathway import SELECTIONS

# --- what every model-running command shares ---
MODEL = Flag("model", Path, typer.Argument(..., help="The .onnx model."))
DEVICE = Flag("device", str, typer.Option("cpu", "--device", help="cpu or cuda."))
THREADS = Flag("threads", int, typer.Option(None, "--threads",
                                            help="ONNX Runtime intra-op threads."))
NO_CACHE = Flag("no_cache", bool, typer.Option(False, "--no-cache", help="Build sessions "
                                               "afresh; neither read nor write the on-disk "
                                               "session cache."))
PROVIDER_OPTION = Flag("provider_option", list[str], typer.Option(
    None, "--provider-option", help="ONNX Runtime provider option KEY=VALUE, repeatable, e.g. "
    "gpu_mem_limit=4000000000."))
PRECISION = Flag("precision", str, typer.Option(None, "--precision", help="A float16 or "
                                                "bfloat16 model's gradients: computed in float32 "
                                                "(default, closer to float64) or in the model's "
                                                "own types (model)."))
# The ONNX Runtime session, in the order evaluate and pathway list it (attribute lists
# --no-cache early and --provider-option after --threads).
RUNTIME = (DEVICE, THREADS, NO_CACHE, PRECISION)
DEBUG = Flag("debug", bool, typer.Option(False, "--debug", help="Show tracebacks."))
OUTPUT = Flag("output", str, typer.Option(None, "--output", help="The model output to explain "
                                          "(default: the one reached through Softmax, or named "
                                          "like logits/probabilities; see inspect)."))
WRT = Flag("wrt", str, typer.Option(None, "--wrt", help="Attribute with respect to this tensor "
                                    "(default: the input, or the first float tensor computed "
                                    "from an integer input)."))
JSON = Flag("as_json", bool, typer.Option(False, "--json", help="One JSON object on stdout."))
KEEP_PROBABILITIES = Flag("keep_probabilities", bool, typer.Option(
    False, "--keep-probabilities", help="Differentiate the Softmax output itself."))
QUIET = Flag("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress on stderr."))
LABELS = Flag("labels", Path, typer.Option(None, "--labels", help="Labels: .txt one per line, "
                                           "or JSON (a list, or Keras' "
                                           "imagenet_class_index.json)."))
REPORT_FILE = Flag("report", str, typer.Option(None, "--report", help="Also write an HTML "
                                               "report: FILE.html (self-contained) or DIR/ "
                                               "(index.html plus pictures)."))

# --- what to explain: the methods and the class ---
METHOD = Flag("method", str, typer.Option("gradient", "--method", "--methods", "-m", help="Comma-"
                                          f"separated methods: {', '.join(METHODS)} (Captum's "
                                          "names work too: saliency, IntegratedGradients, "
                                          "layer_gradcam, ...)."))
# attribute explains any number of classes; pathway and check-grad one.
TARGET = Flag("target", str, typer.Option(None, "--target", "-t", help="Class index, label, or "
                                          "topK (each of the K best classes) to explain "
                                          "(default: the prediction)."))
TARGET_ONE = Flag("target", str, typer.Option(None, "--target", "-t", help="Class index or "
                                              "label (default: the prediction)."))

# --- preprocessing: flags override --preprocess, which overrides --preset ---
PRESET = Flag("preset", str, typer.Option(
    None, "--preset", help=f"Preprocessing preset: {', '.join(PRESETS)} (default: the model's "
    "metadata, else imagenet for 3x224x224 inputs, else none)."))
PREPROCESS = Flag("preprocess", Path, typer.Option(
    None, "--preprocess", help="Preprocessing JSON, e.g. a Hugging Face "
    "preprocessor_config.json."))
# inspect, export and a random check-grad input read no image: --size only fixes their dims.
SIZE = Flag("size", str, typer.Option(None, "--size", help="Model input size HxW, e.g. "
                                      "224x224: images are resized to it, dynamic spatial dims "
                                      "take it."))
RESIZE = Flag("resize", int, typer.Option(None, "--resize", help="Shorter side before the "
                                          "center crop, e.g. 256; 0 squashes the image to "
                                          "--size."))
CROP = Flag("crop", bool, typer.Option(None, "--crop/--no-crop",
                                       help="Center-crop after --resize."))
MEAN = Flag("mean", str, typer.Option(None, "--mean", help="Per-channel mean, e.g. "
                                      "0.485,0.456,0.406."))
STD = Flag("std", str, typer.Option(None, "--std", help="Per-channel std, e.g. "
                                    "0.229,0.224,0.225."))
SCALE = Flag("scale", str, typer.Option(None, "--scale", help="Pixel scale before mean/std, "
                                        "e.g. 1/255 or 1."))
BGR = Flag("bgr", bool, typer.Option(None, "--bgr/--rgb", help="Channel order the model "
                                     "expects."))
LAYOUT = Flag("layout", str, typer.Option(None, "--layout", help="nchw or nhwc (default: "
                                          "guessed from the input shape)."))
GRAY = Flag("gray", bool, typer.Option(None, "--gray", help="Convert images to grayscale."))
# attribute's and pathway's order. evaluate lists the same flags in another:
# PREPROCESSING_BASIC first, then PREPROCESSING_MORE.
PREPROCESSING = (PRESET, PREPROCESS, SIZE, RESIZE, CROP, MEAN, STD, SCALE, BGR, LAYOUT, GRAY)
PREPROCESSING_BASIC = (PRESET, SIZE, MEAN, STD)
PREPROCESSING_MORE = (PREPROCESS, RESIZE, CROP, SCALE, BGR, LAYOUT, GRAY)

# --- rendering: how a raw map becomes a PNG ---
RENDERING = (
    Flag("reduce", str, typer.Option("max-abs", "--reduce", help="Channel reduction for the "
                                     f"PNG: {', '.join(REDUCTIONS)}.")),
    Flag("colormap", str, typer.Option("jet", "--colormap", help=f"PNG colours: "
                                       f"{', '.join(COLORMAPS)} (bwr: signed, blue < 0 < "
                                       "red).")),
    Flag("normalise", str, typer.Option("percentile", "--normalise", help="Colour scale: "
                                        f"{', '.join(NORMALISATIONS)}.")),
    Flag("percentile", float, typer.Option(None, "--percentile", help="percentile: clip |map| "
                                           "at this percentile (99); outlier: Captum's "
                                           "cumulative share (98).")),
    Flag("alpha", float, typer.Option(0.5, "--alpha", help="Overlay opacity over the gray "
                                      "input.")),
)

# --- method options: None means "the method's own default" (see each method's doc) ---
ABS = Flag("absolute", bool, typer.Option(False, "--abs", help="Gradient: absolute value "
                                          "(Saliency)."))
# The critical pathway: attribute's and pathway's (evaluate has --prune and --keep).
PRUNE = Flag("prune", str, typer.Option(None, "--prune", "-p", help="Pathway: percentage P of "
                                        "neurons to prune (85), or auto: per input the largest "
                                        "P whose output change stays within 15% (auto:T for "
                                        "T%)."))
KEEP = Flag("keep", float, typer.Option(None, "--keep", help="Pathway: percentage of neurons "
                                        "to keep (100-P)."))
# inspect counts the neurons of the same --layers.
LAYERS = Flag("layers", str, typer.Option(",".join(RELU_FAMILY), "--layers", help="Pathway: "
                                          "the activation op types whose neurons make it up "
                                          "(Clip: lower bound 0 only)."))
PATHWAY = (
    PRUNE,
    KEEP,
    Flag("selection", str, typer.Option("contribution", "--selection", help="Pathway: how "
                                        f"neurons are selected: {', '.join(SELECTIONS)}.")),
    LAYERS,
    Flag("layer_regex", str, typer.Option(None, "--layer-regex", help="Pathway: only layers "
                                          "whose node or tensor name matches this regex.")),
    Flag("per_layer", bool, typer.Option(False, "--per-layer", help="Pathway: one threshold "
                                         "per layer.")),
)
METHOD_OPTIONS = (
    Flag("steps", int, typer.Option(None, "--steps", help="integrated-gradients: steps (50).")),
    Flag("rule", str, typer.Option(None, "--rule", help="integrated-gradients: gausslegendre, "
                                   "riemann-left|right|middle|trapezoid (gausslegendre).")),
    Flag("baseline", str, typer.Option(None, "--baseline", help="integrated-gradients, "
                                       "deeplift, gradient-shap, deeplift-shap, the feature "
                                       "methods: zero, blur, uniform or FILE.npy; a K×input "
                                       "FILE.npy is a distribution (gradient-shap, "
                                       "deeplift-shap) or background rows "
                                       "(feature-permutation).")),
    Flag("internal_batch_size", int, typer.Option(None, "--internal-batch-size", help="Rows "
                                                  "per ONNX Runtime run (IG, SmoothGrad, "
                                                  "occlusion, RISE, the sampling methods, "
                                                  "scorecam, ablationcam).")),
    Flag("samples", int, typer.Option(None, "--samples", help="smoothgrad: noisy copies (5); "
                                      "lime, kernel-shap: perturbed samples (1000); "
                                      "gradient-shap: draws (5); shapley-sampling: "
                                      "permutations (25); feature-permutation: runs (5); "
                                      "deeplift-shap: uniform baselines (10).")),
    Flag("noise", str, typer.Option(None, "--noise", help="smoothgrad (1.0), gradient-shap "
                                    "(0): noise sigma, absolute or a percentage of the input "
                                    "range (15%).")),
    Flag("variant", str, typer.Option(None, "--variant", help="smoothgrad: mean, square or "
                                      "var.")),
    Flag("seed", int, typer.Option(None, "--seed", help="Random seed: smoothgrad, rise, "
                                   "the sampling methods, deeplift-shap, uniform baseline "
                                   "(0).")),
    Flag("layer", str, typer.Option(None, "--layer", help="A tensor or node name (see "
                                    "inspect). CAM family: the map's layer (default: the last "
                                    "4-D map before global pooling); gradient, "
                                    "input-x-gradient, integrated-gradients, conductance, "
                                    "internal-influence: attribute at this inner tensor (the "
                                    "map has its shape; conductance and internal-influence "
                                    "default to the CAM layer).")),
    Flag("relu", bool, typer.Option(None, "--relu/--no-relu", help="gradcam and the CAM family: "
                                    "ReLU the map (off; guided-gradcam: on).")),
    Flag("window", str, typer.Option(None, "--window", help="occlusion: window, N or HxW "
                                     "(16).")),
    Flag("stride", str, typer.Option(None, "--stride", help="occlusion: stride, N or HxW "
                                     "(8).")),
    Flag("fill", float, typer.Option(None, "--fill", help="occlusion: value of occluded "
                                     "pixels (0).")),
    Flag("masks", int, typer.Option(None, "--rise-masks", help="rise: number of masks "
                                    "(1000).")),
    Flag("cells", int, typer.Option(None, "--cells", help="rise: grid cells per side (7).")),
    Flag("probability", float, typer.Option(None, "--probability", help="rise: keep "
                                            "probability.")),
    # --- LRP and DeepLIFT (rule-swap methods) ---
    Flag("composite", str, typer.Option(None, "--composite", help="lrp: rules per layer: "
                                        "epsilon, zplus, alpha1beta0, alpha2beta1, gamma, "
                                        "epsilon-plus, epsilon-plus-flat, epsilon-gamma-box, "
                                        "epsilon-alpha2beta1(-flat), or conv=R,dense=R,first=R "
                                        "(epsilon).")),
    Flag("epsilon", float, typer.Option(None, "--epsilon", help="lrp: ε of the ε rule "
                                        "(1e-6).")),
    Flag("gamma", float, typer.Option(None, "--gamma", help="lrp: γ of the γ rule (0.25).")),
    Flag("box", str, typer.Option(None, "--box", help="lrp: input bounds LOW,HIGH of the z^B "
                                  "rule (default: each input's own min and max).")),
    Flag("zero_bias", bool, typer.Option(None, "--zero-bias", help="lrp: leave biases out of "
                                         "the rules (Zennit's zero_params=bias).")),
    # --- sampling: GradientShap, Shapley value sampling, ablation, permutation ---
    # --- the CAM family ---
    # --- layer and neuron attributions ---
    Flag("neuron", str, typer.Option(None, "--neuron", help="gradient, input-x-gradient, "
                                     "integrated-gradients, conductance: explain one element "
                                     "of the --layer tensor instead of a logit, e.g. 5,3,3 "
                                     "(per example, no batch index).")),
)
# The features of the perturbation methods (attribute lists them after the MODAL flags).
SURROGATE = (
    Flag("segments", str, typer.Option(None, "--segments", help="lime, kernel-shap, "
                                       "occlusion, shapley-sampling, feature-ablation, "
                                       "feature-permutation: features: grid[:K], slic[:N], "
                                       "each, rows, windows[:K].")),
    Flag("score", str, typer.Option(None, "--score", help="lime, kernel-shap (probability), "
                                    "shapley-sampling, feature-ablation, feature-permutation "
                                    "(logit): probability or logit.")),
    Flag("kernel_width", float, typer.Option(None, "--kernel-width", help="lime: kernel "
                                             "width (0.25; 0.75·√M for table features).")),
)

# --- model intake: which output, which input, which element, which region ---
INTAKE = (
    OUTPUT,
    WRT,
    Flag("target_index", str, typer.Option(None, "--target-index", help="Explain one element "
                                           "of the output, e.g. 3,10,12 (per example, no "
                                           "batch index).")),
    Flag("region", Path, typer.Option(None, "--region", help="Segmentation outputs (N×K×H×W): "
                                      "sum class logits over this mask (.png/.npy; default: "
                                      "the pixels predicted as the class).")),
)

# --- tables, series, text (onnxpath/io) ---
MODAL = (
    Flag("text", str, typer.Option(None, "--text", help="Text to explain (with --tokenizer).")),
    Flag("tokenizer", Path, typer.Option(None, "--tokenizer", help="Hugging Face "
                                         "tokenizer.json for raw text (pip install "
                                         "'onnxpath[text]').")),
    Flag("features", Path, typer.Option(None, "--features", help="Feature names, one per "
                                        "line, for the columns of .npy table rows.")),
    Flag("sample_rate", int, typer.Option(None, "--sample-rate", help="Sample rate of the "
                                          "series (checked against .wav files and the "
                                          "model's metadata).")),
    Flag("token_reduce", str, typer.Option("sum", "--token-reduce", help="Per-token score "
                                           "from the T×D map: sum (signed), abs-sum or l2.")),
)

# --- --engine ray (onnxpath.run.ray) ---
RAY = (
    Flag("engine", str, typer.Option("local", "--engine", help="local, or ray (Ray Data; "
                                     "needs the ray extra of onnxpath).")),
    Flag("address", str, typer.Option(None, "--address", help="ray: cluster address, auto or "
                                      "ray://host:10001 (default: RAY_ADDRESS, else a local "
                                      "Ray).")),
    Flag("actors", str, typer.Option("2", "--actors", help="ray: actors, N or MIN-MAX to "
                                     "autoscale.")),
    Flag("cpus_per_actor", float, typer.Option(1.0, "--cpus-per-actor", help="ray: CPUs per "
                                               "actor (also its ONNX Runtime threads).")),
    Flag("gpus_per_actor", float, typer.Option(0.0, "--gpus-per-actor", help="ray: GPU share "
                                               "per actor, e.g. 0.5 (with --device cuda).")),
    Flag("ray_timeout", float, typer.Option(None, "--ray-timeout", help="ray: seconds to reach "
                                            "the cluster (or start a local Ray) before giving "
                                            "up (30).")),
)

# --- attribute's HTML report (onnxpath.report) ---
REPORT = (
    REPORT_FILE,
    Flag("report_every", int, typer.Option(25, "--report-every", help="Rewrite the report "
                                           "every N inputs, so a long batch can be watched.")),
    Flag("report_at_end", bool, typer.Option(False, "--report-at-end", help="Write the report "
                                             "only when the batch ends.")),
)
