"""Pre-annotation on the bundled sample: polygon simplification and what a person keeps.

With the main job's model (`keras-unet` first: `runs/sample/run`, its last
checkpoint, which the main job scores and exports), predicts the
held-out images of `datasets/nuclei` as LabelMe files (`predict --labelme`) and
measures:

1. per polygon simplification tolerance (`--epsilon`): polygon points per
   object, and the share of pixels (all, and foreground) unchanged when the
   LabelMe files are converted back with `labelme2masks`; the default is the
   largest tolerance that keeps >= 99.5 % of the pixels;
2. at the default: the share of predicted objects a person would keep (IoU
   >= 0.5 with a true nucleus), the share of true nuclei found, polygon points
   per object against the bundled annotations, and seconds per image.

    python benchmarks/bench_preannotate.py [--run runs/sample/run]
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, save, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EPSILONS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def points_per_object(folder: Path, label: str = "nucleus") -> float:
    shapes = [s for p in folder.glob("*.json") for s in json.loads(p.read_text())["shapes"]
              if s["label"] == label]
    return float(np.mean([len(s["points"]) for s in shapes])) if shapes else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(REPO / "runs/sample/run"))
    parser.add_argument("--sample", default=str(REPO / "datasets/nuclei"))
    args = parser.parse_args()
    run, sample = Path(args.run), Path(args.sample)
    model = run / "checkpoints" / "last.keras"
    if not model.is_file():
        sys.exit(f"{run}: no trained model; run `keras-unet` (the main job) first")

    quiet_tensorflow()
    from keras_unet.data.convert import labelme_to_masks
    from keras_unet.data.readers import read_instances, read_mask
    from keras_unet.evaluation.scores import ObjectScores, object_scores
    from keras_unet.inference.preannotate import DEFAULT_EPSILON, LabelMeOutput
    from keras_unet.inference.predict import load_predictor, predict_files

    names = (sample / "val.txt").read_text().split()
    predictor = load_predictor(model)
    work = Path(tempfile.mkdtemp(prefix="bench_preannotate_"))
    images = work / "images"
    images.mkdir()
    for name in names:
        shutil.copy(sample / f"{name}.png", images / f"{name}.png")
    truth = work / "truth"
    labelme_to_masks(sample, truth, instances=True)

    rows, timing = [], None
    for epsilon in EPSILONS:
        out = work / f"eps{epsilon}"
        start = time.perf_counter()
        predict_files(predictor, images, out, labelme=LabelMeOutput(epsilon=epsilon))
        if epsilon == DEFAULT_EPSILON:
            timing = (time.perf_counter() - start) / len(names)
        for name in names:
            shutil.copy(images / f"{name}.png", out / f"{name}.png")
        back = work / f"back{epsilon}"
        labelme_to_masks(out, back, labels=predictor.names, workers=1)
        changed = foreground = total = 0
        for name in names:
            predicted = read_mask(out / "masks" / f"{name}.png")
            returned = read_mask(back / "masks" / f"{name}.png")
            changed += int((predicted != returned).sum())
            foreground += int((predicted > 0).sum())
            total += predicted.size
        rows.append({"epsilon": epsilon, "points_per_object": points_per_object(out),
                     "pixels_unchanged": 1 - changed / total,
                     "foreground_unchanged": 1 - changed / max(foreground, 1)})
    allowed = [r for r in rows if r["pixels_unchanged"] >= 0.995]
    chosen = max(allowed, key=lambda r: r["epsilon"])["epsilon"]

    objects = ObjectScores()
    default = work / f"eps{DEFAULT_EPSILON}"
    for name in names:
        true_ids = read_instances(truth / "instances" / f"{name}.png")
        predicted = read_instances(default / "instances" / f"{name}.png")
        objects = objects.add(object_scores(true_ids, predicted))
    summary = {
        "images": len(names), "model": str(model),
        "default_epsilon": DEFAULT_EPSILON, "largest_epsilon_keeping_99.5%": chosen,
        "kept_objects": objects.tp / max(objects.predicted_objects, 1),
        "found_objects": objects.tp / max(objects.true_objects, 1),
        "predicted_objects": objects.predicted_objects, "true_objects": objects.true_objects,
        "points_per_object_predicted": points_per_object(default),
        "points_per_object_annotations": points_per_object(sample),
        "seconds_per_image": timing,
    }
    print(table(rows, ["epsilon", "points_per_object", "pixels_unchanged",
                       "foreground_unchanged"]))
    print(f"largest epsilon keeping >= 99.5 % of the pixels: {chosen} (default "
          f"{DEFAULT_EPSILON})")
    print(f"at the default, {summary['images']} held-out images: "
          f"{summary['kept_objects']:.1%} of {objects.predicted_objects} predicted objects "
          f"match a true nucleus (IoU >= 0.5), {summary['found_objects']:.1%} of "
          f"{objects.true_objects} nuclei found; {summary['points_per_object_predicted']:.1f}"
          f" points per object (bundled annotations: "
          f"{summary['points_per_object_annotations']:.1f}); {timing:.2f} s per image")
    print(save("preannotate", {"epsilons": rows, **summary}))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
