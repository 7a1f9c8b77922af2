"""onnxpath against its peers, on the same model, inputs and settings, in one process.

    python benchmarks/bench_peers.py [--model resnet50] [--rounds 3] [--threads 2]
                                     [--device cpu|cuda] [--skip NAME,...]

Pairs (ours: `Explainer.attribute(x, method, target=t)`, the public API):
- gradient, IG-50 (Gauss-Legendre) and SmoothGrad against Captum (Saliency, IntegratedGradients
  at its fastest internal batch size, measured first; NoiseTunnel(Saliency));
- Grad-CAM against pytorch-grad-cam (`grad-cam`), same layer (the last block's output);
- pathway (85% pruned, contribution selection) against the papers' procedure in torch: ReLU
  outputs multiplied by masks through forward hooks, d logit / d masks at masks = 1 (the
  contributions), the global percentile by kthvalue, then d logit / d x with the masks fixed;
- RISE against DIANNA (`dianna`) on DIANNA's own MNIST model, 1000 masks, an 8x8 grid,
  p = 0.5, batches of 100 for both. DIANNA is given a function that runs one prepared ONNX
  Runtime session (same threads and provider), and, on the CPU, also the model path, which
  is how its documentation calls it (it then builds a session per batch);
- each forward-only method and protocol against its forward-pass limit (bench_forward.py).

Ceilings: beside each pair with a target, the run also times ONNX Runtime's own minimum work
for the method (a plain forward session run, times the passes the method cannot avoid; see
`floors`), and prints peer time / that floor: the best speed-up any ONNX Runtime
implementation could show. A target above its ceiling cannot be met on this runtime and
machine by any implementation.

Rounds are interleaved: each round times every pair once, ours then the peer's, so both sides
of a ratio see the same load; medians over rounds are printed, with the median of the rounds'
ratios (peer time / our time: above 1 means onnxpath is faster). torch runs with as many
threads as ONNX Runtime, and like it without spinning waits (OMP_WAIT_POLICY=PASSIVE, unless
set). A peer that is not installed is reported as skipped.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # DIANNA's progress bars; read when tqdm loads
# ONNX Runtime runs with spinning off (runtime.py); torch's OpenMP threads get the same, or
# under contention they spin at barriers and torch slows down many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _models import export, randomise_batchnorm, resnet18, resnet50, vgg16  # noqa: E402

from onnxpath.explainer import Explainer  # noqa: E402

MODELS = {"resnet50": resnet50, "resnet18": resnet18, "vgg16": vgg16}
TARGETS = {"gradient": 2.0, "integrated-gradients": 1.5, "pathway": 3.0, "rise": 3.0}
IG_BATCHES = (5, 10, 25)  # 50 ResNet-50 images with their activations: several GB


class Pair:
    """One method, ours against a peer; `floor` (optional) times the ONNX Runtime work that any
    implementation of the method on ONNX Runtime must do at least, `floor_factor` times over
    (see `floors`). peer / floor is then the best speed-up any ORT-based tool could show."""

    def __init__(self, name: str, ours, peer, peer_name: str, note: str = "",
                 floor=None, floor_factor: float = 1.0, floor_note: str = ""):
        self.name, self.ours, self.peer, self.peer_name, self.note = (name, ours, peer,
                                                                      peer_name, note)
        self.floor, self.floor_factor, self.floor_note = floor, floor_factor, floor_note
        self.times: dict[str, list[float]] = {"ours": [], "peer": [], "floor": [],
                                              "direct": []}


def clock(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class TorchPathway:
    """The papers' procedure (Khakzar et al.) in torch, float32: every ReLU call's output is
    multiplied by a mask in a forward hook (one mask per call, as ONNX sees each call as its
    own node)."""

    def __init__(self, model: torch.nn.Module):
        # Its own copy: the hooks must not touch the model the other peers run.
        self.model, self.masks, self.calls = copy.deepcopy(model), None, []
        for m in self.model.modules():
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
                m.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        if self.masks is None:
            mask = torch.ones_like(output, requires_grad=True)
        else:
            mask = self.masks[len(self.calls)]
        self.calls.append(mask)
        return output * mask

    def __call__(self, x: torch.Tensor, target: int, prune: float = 85.0) -> torch.Tensor:
        self.masks, self.calls = None, []
        y = self.model(x)[0, target]
        scores = [g.abs() for g in torch.autograd.grad(y, self.calls)]
        flat = torch.cat([s.reshape(-1) for s in scores])
        k = max(1, int(round(prune / 100 * flat.numel())))
        threshold = torch.kthvalue(flat.cpu(), k).values.to(flat.device)
        self.masks = [(s > threshold).to(s.dtype) for s in scores]
        self.calls = []
        xi = x.clone().requires_grad_()
        y = self.model(xi)[0, target]
        grad = torch.autograd.grad(y, xi)[0]
        self.masks, self.calls = None, []
        return grad


def captum_pairs(fresh, net, x, xt, t, device, args) -> list[Pair]:
    """`fresh()` makes each pair its own Explainer: one shared by gradient, IG and SmoothGrad
    fed one input gradient session batches of 1, 50 and 10 rows in turn, and on CUDA the
    interleaved rounds then timed onnxpath's gradient at 175 ms where back-to-back calls took
    5.4 ms (the pairs with their own sessions, Grad-CAM and pathway, agreed). Each method on
    its own session is how a user runs one method on a stream of inputs."""
    try:
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    except ImportError:
        print("captum: not installed, gradient/IG/SmoothGrad pairs skipped")
        return []
    saliency = Saliency(net)
    gradient, integrated, smooth = fresh(), fresh(), fresh()
    pairs = [Pair("gradient", lambda: gradient.attribute(x, "gradient", target=t),
                  lambda: saliency.attribute(xt, target=t, abs=False), "Captum Saliency")]
    ig = IntegratedGradients(net)
    best, best_time = IG_BATCHES[0], float("inf")
    for size in IG_BATCHES:  # Captum's fastest internal batch size, found first
        took = min(clock(lambda s=size: ig.attribute(xt, target=t, n_steps=args.ig_steps,
                                                     internal_batch_size=s), device)
                   for _ in range(1))
        if took < best_time:
            best, best_time = size, took
    print(f"Captum IG-{args.ig_steps}: fastest internal_batch_size {best} of {IG_BATCHES}")
    pairs.append(Pair(f"integrated-gradients-{args.ig_steps}",
                      lambda: integrated.attribute(x, "integrated-gradients", target=t,
                                                  steps=args.ig_steps),
                      lambda: ig.attribute(xt, target=t, n_steps=args.ig_steps,
                                           method="gausslegendre", internal_batch_size=best),
                      f"Captum IntegratedGradients (internal_batch_size={best})"))
    sigma = float(0.15 * (x.max() - x.min()))
    tunnel = NoiseTunnel(saliency)
    pairs.append(Pair(f"smoothgrad-{args.samples}",
                      lambda: smooth.attribute(x, "smoothgrad", target=t,
                                                  samples=args.samples, noise=sigma),
                      lambda: tunnel.attribute(xt, nt_type="smoothgrad",
                                               nt_samples=args.samples, stdevs=sigma,
                                               target=t, abs=False),
                      "Captum NoiseTunnel(Saliency)"))
    return pairs


def torchvision_stand_in() -> None:
    """pytorch-grad-cam imports torchvision.transforms at import time, for image helpers that
    Grad-CAM never calls. Where torchvision is absent, or is a build for another torch (its
    compiled ops then fail to load), stand-in modules keep that import working; calling
    anything from them raises."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or
                     m.startswith("torchvision.")]:
            del sys.modules[name]
    import types

    def missing(attr):
        def refuse(*args, **kwargs):
            raise RuntimeError(f"torchvision.{attr} is a stand-in: torchvision is absent")
        return refuse

    for name in ("torchvision", "torchvision.transforms",
                 "torchvision.transforms.functional"):
        module = types.ModuleType(name)
        module.__getattr__ = missing
        sys.modules[name] = module
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].functional = \
        sys.modules["torchvision.transforms.functional"]


def gradcam_pair(explainer, net, x, xt, t) -> list[Pair]:
    torchvision_stand_in()
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        print(f"pytorch-grad-cam: not importable ({err}), Grad-CAM pair skipped")
        return []
    layer = net.layer4[-1] if hasattr(net, "layer4") else net.features[-2]
    cam = GradCAM(model=net, target_layers=[layer])
    return [Pair("gradcam", lambda: explainer.attribute(x, "gradcam", target=t),
                 lambda: cam(input_tensor=xt, targets=[ClassifierOutputTarget(t)]),
                 "pytorch-grad-cam GradCAM")]


def pathway_pair(explainer, net, x, xt, t) -> list[Pair]:
    procedure = TorchPathway(net)
    ours = explainer.attribute(x, "pathway", target=t)
    theirs = procedure(xt, t).detach().cpu().numpy()
    r = np.corrcoef(ours.maps.ravel(), theirs.ravel())[0, 1]
    return [Pair("pathway", lambda: explainer.attribute(x, "pathway", target=t),
                 lambda: procedure(xt, t), "torch, the papers' procedure",
                 f"maps agree: Pearson {r:.4f}")]


def mnist_nchw(path: Path, out: Path) -> Path:
    """DIANNA's NHWC MNIST model behind a Transpose, so that its input is (N, 1, 28, 28)."""
    import onnx
    from onnx import helper
    model = onnx.load(str(path))
    graph = model.graph
    old = graph.input[0]
    new_name = "image_nchw"
    graph.node.insert(0, helper.make_node("Transpose", [new_name], [old.name],
                                          perm=[0, 2, 3, 1], name="to_nhwc"))
    dims = [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]
    new = helper.make_tensor_value_info(new_name, old.type.tensor_type.elem_type,
                                        [dims[0], dims[3], dims[1], dims[2]])
    graph.input.remove(old)
    graph.input.insert(0, new)
    onnx.save(model, str(out))
    return out


def rise_pairs(args, folder: Path) -> list[Pair]:
    try:
        import dianna
        from dianna.methods.rise_image import RISEImage
    except ImportError as err:
        print(f"dianna: not importable ({err}), RISE pair skipped")
        return []
    import onnxruntime as ort

    from onnxpath.ort.sessions import providers_for, session_options
    path = Path(dianna.__file__).parent / "models" / "mnist_model_tf.onnx"
    explainer = Explainer(mnist_nchw(path, folder / "mnist_nchw.onnx"), device=args.device,
                          threads=args.threads, cache=False)
    image = np.random.default_rng(3).random((28, 28, 1)).astype(np.float32)
    x = image.transpose(2, 0, 1)[None]
    t = int(explainer.predict(x).argmax())
    session = ort.InferenceSession(str(path), session_options(args.threads),
                                   providers=providers_for(args.device))
    name = session.get_inputs()[0].name

    def run(batch):
        return session.run(None, {name: np.asarray(batch, np.float32)})[0]

    settings = {"n_masks": args.masks, "feature_res": 8, "p_keep": 0.5}

    def ours(batch=None):  # None: the batch size measured fastest for the model
        return explainer.attribute(x, "rise", target=t, masks=args.masks, cells=8,
                                   probability=0.5, internal_batch_size=batch)

    def peer(model):
        return RISEImage(**settings, axis_labels={2: "channels"}).explain(
            model, image, labels=[t], batch_size=100)

    fastest = explainer.fastest_batch(x.shape)
    rows = np.repeat(image[None], fastest, axis=0)

    def forward_limit():  # the masked images' forward passes alone, at the fastest batch
        for _ in range(-(-args.masks // fastest)):
            run(rows)

    limit_note = f"{args.masks} forwards at batch {fastest}"
    pairs = [Pair("rise", ours, lambda: peer(run), "DIANNA RISEImage, one prepared session",
                  f"DIANNA's MNIST model, {args.masks} masks, 8x8, p=0.5; DIANNA batch 100, "
                  f"onnxpath its fastest, {fastest}", forward_limit, 1.0, limit_note),
             Pair("rise (both batch 100)", lambda: ours(100), lambda: peer(run),
                  "DIANNA RISEImage, one prepared session")]
    if args.device == "cpu":
        pairs.append(Pair("rise (DIANNA given the path)", ours, lambda: peer(str(path)),
                          "DIANNA RISEImage, model path (a session per batch)"))
    return pairs


def floors(explainer, x: np.ndarray, steps: int) -> dict[str, tuple | None]:
    """ONNX Runtime's own forward pass on the model, and how many of them each method needs at
    the least: a backward pass costs at least a forward one (its data convolutions have the
    forward's FLOPs; ORT's stride-1 ones run the very same Conv kernels), so a gradient is >= 2
    forwards, IG-n >= 2 forwards of its n rows (one batch of n, ORT's cheapest per row), pathway
    >= 4 (two forward+backward passes: the issue's own limit of 2 gradients)."""
    def forward_of(rows: int):
        engine = explainer.engine((rows, *x.shape[1:]))
        feeds = {engine.input_name: np.repeat(x, rows, axis=0)}
        engine.logits(feeds[engine.input_name])  # builds the forward session
        return lambda: engine._forward.run(None, feeds)

    one = forward_of(1)
    return {"gradient": (one, 2.0, "2 forwards"),
            "integrated-gradients": (forward_of(steps), 2.0,
                                     f"2 forwards of {steps} rows in one batch"),
            "pathway": (one, 4.0, "4 forwards")}


def run_rounds(pairs: list[Pair], rounds: int, device: str) -> None:
    for pair in pairs:  # warm: sessions, graphs, allocations
        pair.ours()
        pair.peer()
        if pair.floor is not None:
            pair.floor()
    for _ in range(rounds):
        for pair in pairs:
            pair.times["ours"].append(clock(pair.ours, device))
            pair.times["peer"].append(clock(pair.peer, device))
            if pair.floor is not None:
                pair.times["floor"].append(clock(pair.floor, device) * pair.floor_factor)
    for pair in pairs:  # the cross-check: the same calls back to back, nothing in between
        pair.times["direct"] = [clock(pair.ours, device) for _ in range(rounds)]


def suspicious(pairs: list[Pair], factor: float = 2.0) -> list[str]:
    """Pairs whose interleaved time for onnxpath is over `factor` times its back-to-back
    time: something between the calls (another pair's shapes or memory) is being timed."""
    found = []
    for p in pairs:
        interleaved, direct = (statistics.median(p.times[k]) for k in ("ours", "direct"))
        if interleaved > factor * direct:
            found.append(f"{p.name}: {interleaved * 1000:.1f} ms interleaved, "
                         f"{direct * 1000:.1f} ms back to back")
    return found


def print_table(pairs: list[Pair]) -> None:
    print(f"{'method':30s} {'onnxpath':>10s} {'peer':>10s} {'speed-up':>9s} {'target':>7s}  "
          "peer")
    ceilings = []
    for p in pairs:
        ours, peer = (statistics.median(p.times[k]) for k in ("ours", "peer"))
        ratio = statistics.median(b / a for a, b in zip(p.times["ours"], p.times["peer"],
                                                         strict=True))
        base = p.name.split(" ")[0].rsplit("-", 1)[0] if p.name.startswith("integrated") \
            else p.name.split(" ")[0]
        target = TARGETS.get(base)
        mark = "" if target is None else f">= {target:g}" + ("" if ratio >= target else " no")
        note = f"; {p.note}" if p.note else ""
        print(f"{p.name:30s} {ours * 1000:8.1f}ms {peer * 1000:8.1f}ms {ratio:8.2f}x "
              f"{mark:>7s}  {p.peer_name}{note}")
        if p.times["floor"]:
            floor = statistics.median(p.times["floor"])
            ceiling = statistics.median(b / f for b, f in zip(p.times["peer"], p.times["floor"],
                                                               strict=True))
            reach = "" if target is None else ("reachable" if ceiling >= target
                                               else "UNREACHABLE")
            ceilings.append(f"{p.name:30s} {floor * 1000:8.1f}ms {ceiling:8.2f}x "
                            f"{'' if target is None else f'>= {target:g}':>7s} {reach:11s} "
                            f"{p.floor_note}")
    if ceilings:
        print("\nceilings: ONNX Runtime's own minimum work for the method (floor), and the "
              "best speed-up\nany ONNX Runtime implementation could show against the peer "
              "(peer time / floor, median of the rounds):")
        print(f"{'method':30s} {'floor':>10s} {'ceiling':>9s} {'target':>7s}")
        print("\n".join(ceilings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", choices=sorted(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--samples", type=int, default=10, help="SmoothGrad samples")
    parser.add_argument("--masks", type=int, default=1000, help="RISE masks")
    parser.add_argument("--skip", default="", help="comma-separated: captum, gradcam, "
                        "pathway, rise, forward")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)  # as many as ONNX Runtime: fair, and no oversubscription
    import tempfile

    import onnxruntime as ort
    print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; device {args.device}; {args.threads} threads for torch and "
          f"ONNX Runtime; torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    torch.manual_seed(0)
    net = randomise_batchnorm(MODELS[args.model]()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = export(net, size=args.size, path=folder / f"{args.model}.onnx")
        explainer = Explainer(path, device=args.device, threads=args.threads, cache=False)
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)) \
            .astype(np.float32)
        t = int(explainer.predict(x).argmax())
        net = net.to(args.device)
        xt = torch.from_numpy(x).to(args.device)
        print(f"model: {args.model} {args.size}x{args.size} (random weights), one image, "
              f"target class {t}")
        pairs = []
        if "captum" not in skip:
            pairs += captum_pairs(
                lambda: Explainer(path, device=args.device, threads=args.threads, cache=False),
                net, x, xt, t, args.device, args)
        if "gradcam" not in skip:
            pairs += gradcam_pair(explainer, net, x, xt, t)
        if "pathway" not in skip:
            pairs += pathway_pair(explainer, net, x, xt, t)
        if "rise" not in skip:
            pairs += rise_pairs(args, folder)
        minimum = floors(explainer, x, args.ig_steps)
        for pair in pairs:
            base = pair.name.split(" ")[0]
            base = base.rsplit("-", 1)[0] if base.startswith("integrated") else base
            if minimum.get(base) and pair.floor is None:
                pair.floor, pair.floor_factor, pair.floor_note = minimum[base]
        run_rounds(pairs, args.rounds, args.device)
        print(f"\nmedians of {args.rounds} interleaved rounds (speed-up = peer time / "
              "onnxpath time, median of the rounds' ratios):")
        print_table(pairs)
        for line in suspicious(pairs):
            print(f"WARNING, not trustworthy: {line}")
        print(f"load average after the pairs: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if "forward" not in skip:
        import bench_forward
        print("\nforward-only methods and protocols against the forward-pass limit "
              "(resnet18 112x112, 2 images; see bench_forward.py):")
        torch.manual_seed(0)
        small = export(randomise_batchnorm(resnet18()), size=112)
        explainer = Explainer(small, device=args.device, threads=args.threads, cache=False)
        x = np.random.default_rng(0).standard_normal((2, 3, 112, 112)).astype(np.float32)
        bench_forward.report(*bench_forward.measure(explainer, x, args.rounds, 200, 16))
        print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
