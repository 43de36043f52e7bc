"""Dataset conversion: LabelMe folders to training datasets, and back.

`labelme_to_masks` turns a folder tree of LabelMe JSON files into the
dataset layout that keras-unet trains on::

    output/
      labels.txt          class names, one per line (id = line - 1)
      images/<name>.png   the upright image, lossless; an 8-bit RGB or greyscale
                          PNG source that needs no change is copied as is,
                          anything else is decoded to RGB and re-encoded
      masks/<name>.png    class ids, palette PNG, 255 = ignore
      instances/<name>.png  instance ids, 16-bit PNG (optional)
      overlays/<name>.jpg   image + coloured mask + legend (optional)

`<name>` is the JSON file's path relative to the input folder, without
suffix, so files of the same name in different folders do not collide.
`masks_to_labelme` goes the other way, so mask datasets can be corrected in
LabelMe.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from keras_unet import files
from keras_unet.data.labelme import (
    LabelMeError,
    Shape,
    image_file_as_is,
    labelme_document,
    load_image,
    rasterize,
    read_annotation,
    resolve_image_path,
    scan_labels,
)
from keras_unet.data.labels import (
    IGNORE_ID,
    IGNORE_LABEL,
    label_ids,
    labels_text,
    make_label_list,
    read_label_names,
    read_labels,
)
from keras_unet.data.readers import ReadError, read_instances, read_mask, save_instances, save_mask
from keras_unet.data.visualize import overlay

log = logging.getLogger(__name__)

LABELS_FILE = "labels.txt"


@dataclass
class ConversionSummary:
    """What a conversion did.

    Attributes:
        files: JSON files found.
        converted: Files written.
        skipped: Files whose outputs were already up to date.
        errors: `(file, reason)` of every file that failed.
        shapes: Shapes drawn, per shape type.
        pixels: Pixels per class name (converted files only).
        labels: The class names, index = class id.
    """

    files: int = 0
    converted: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    shapes: Counter = field(default_factory=Counter)
    pixels: Counter = field(default_factory=Counter)
    labels: list[str] = field(default_factory=list)

    def format(self) -> str:
        """A human-readable multi-line report."""
        # Shapes and pixels are counted while converting: say so when files
        # were skipped, rather than print "none" for an up-to-date dataset.
        scope = " (converted files)" if self.skipped else ""
        empty = "none converted, the files were up to date" if self.skipped else "none"
        lines = [
            f"files: {self.files}  converted: {self.converted}  "
            f"up to date (skipped): {self.skipped}  errors: {len(self.errors)}",
            f"shapes{scope}: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.shapes.items())) or empty),
            f"pixels per class{scope}: "
            + (", ".join(f"{k} {v}" for k, v in self.pixels.most_common()) or empty),
        ]
        lines += [f"ERROR {path}: {reason}" for path, reason in self.errors]
        return "\n".join(lines)


def find_json_files(
    root: str | os.PathLike, exclude: str | os.PathLike | None = None
) -> list[Path]:
    """All `.json` files below `root`, sorted, skipping the `exclude` folder."""
    root = Path(root)
    skip = Path(exclude).resolve() if exclude else None
    return sorted(
        p for p in root.rglob("*.json")
        if not (skip and skip in p.resolve().parents)
    )


def _labels_of_file(path: Path) -> set[str]:
    """The labels of one file; none for a bad file (its conversion reports it)."""
    try:
        return scan_labels(path)
    except LabelMeError:
        return set()


def labelme_to_masks(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    labels: str | os.PathLike | list[str] | None = None,
    instances: bool = False,
    overlays: bool = False,
    force: bool = False,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> ConversionSummary:
    """Converts a folder tree of LabelMe JSON files into a training dataset.

    Args:
        input_dir: Folder searched recursively for `.json` files.
        output_dir: Dataset folder to write (see the module docstring).
        labels: A `labels.txt` path or a list of class names. `None` builds
            the map from every label found, sorted.
        instances: Also write instance-id masks.
        overlays: Also write overlay pictures for checking by eye.
        force: Rewrite outputs that are already up to date.
        strict: Stop at the first bad file (raise) instead of going on.
        workers: Processes; `None` uses every core, 1 runs in-process.
        progress: Show a progress bar.

    Returns:
        A `ConversionSummary`; `summary.errors` lists the bad files.

    Raises:
        LabelMeError: If `input_dir` or the labels file does not exist,
            `input_dir` holds no `.json` file, or with `strict=True`, for the
            first bad file.
        OSError: If `output_dir` cannot be created or written (the message
            names it).
        keras_unet.data.labels.LabelMapError: If the label map is invalid (e.g.
            more than 254 classes).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise LabelMeError(input_dir, "input folder not found" if not input_dir.exists()
                           else "not a folder (give the folder that holds the .json files)")
    if isinstance(labels, (str, os.PathLike)) and not Path(labels).is_file():
        raise LabelMeError(labels, "labels file not found")
    paths = find_json_files(input_dir, exclude=output_dir)
    if not paths:
        raise LabelMeError(input_dir, "no LabelMe .json files in this folder or below it "
                                      "(nothing to convert)")
    files.check_writable_folder(output_dir)
    stale = files.remove_stale_temporaries(output_dir)
    if stale:
        log.info("removed %d partial files that an interrupted conversion left in %s",
                 stale, output_dir)
    summary = ConversionSummary(files=len(paths))
    workers = workers or os.cpu_count() or 1
    workers = min(workers, len(paths))
    with _runner(workers) as run:
        return _convert_all(input_dir, output_dir, paths, summary, run, labels=labels,
                            instances=instances, overlays=overlays, force=force,
                            strict=strict, progress=progress)


@contextlib.contextmanager
def _runner(workers: int):
    """Yields `run(fn, items, bar=None)` (see `_run`) on a pool of `workers`.

    One process pool serves every call; `workers=1` runs in-process.
    """
    if workers <= 1:
        yield functools.partial(_run, pool=None, workers=1)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_follow_parent,
                             initargs=(os.getpid(),)) as pool:
        yield functools.partial(_run, pool=pool, workers=workers)


def _follow_parent(parent: int) -> None:
    """Runs in each worker: exits as soon as the parent process is gone.

    A killed parent (`kill -9`) cannot tell its workers to stop, and they
    would wait forever for work; a daemon thread watches for the parent's
    end (the worker then belongs to another process) and ends the worker.
    """
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="follow-parent").start()


def _convert_all(input_dir, output_dir, paths, summary, run, *, labels, instances,
                 overlays, force, strict, progress) -> ConversionSummary:
    """The conversion behind `labelme_to_masks`, on `run` (see `_runner`).

    Without a label map the files are scanned for labels first; with one,
    every file is read once, and a file with a label missing from the map
    is an error.
    """
    if isinstance(labels, (str, os.PathLike)):
        # LabelMe's meaning whatever the form: unannotated pixels are id 0.
        names = make_label_list(read_label_names(labels), source=str(labels))
    elif labels is not None:
        names = make_label_list(labels, source="labels")
    else:
        found = [used for _, used in run(_labels_of_file, [(p,) for p in paths])]
        names = make_label_list(sorted(set().union(*found)))
    ids = label_ids(names)
    labels_path = output_dir / LABELS_FILE
    text = labels_text(names)
    if labels_path.is_file() and labels_path.read_text(encoding="utf-8") != text:
        log.warning("label map changed since the last run: rewriting every file")
        force = True
    files.write_text(labels_path, text)
    summary.labels = names

    jobs = [
        (p, output_dir, _stem(p, input_dir), ids, names, instances, overlays, force)
        for p in paths
    ]
    bar = tqdm(total=len(jobs), desc="labelme2masks", unit="file",
               disable=None if progress else True)
    results = run(_convert_one, jobs, bar=bar)
    unknown: dict[str, list[str]] = {}
    for index, result in results:
        path = paths[index]
        if isinstance(result, _Failure):
            if strict:
                results.close()
                bar.close()
                raise LabelMeError(path, result.reason)
            summary.errors.append((str(path), result.reason))
            for label in result.unknown_labels:
                unknown.setdefault(label, []).append(str(path))
        elif result is None:
            summary.skipped += 1
        else:
            shapes, pixels = result
            summary.converted += 1
            summary.shapes.update(shapes)
            summary.pixels.update(
                {("__ignore__" if i == IGNORE_ID else names[i]): n for i, n in pixels.items()}
            )
    bar.close()
    if unknown:
        log.error(
            "labels missing from the label map: %s",
            "; ".join(f"{k!r} in {', '.join(sorted(v))}" for k, v in sorted(unknown.items())),
        )
    summary.errors.sort()
    return summary


@dataclass(frozen=True)
class _Failure:
    """Why one file was not converted (and the labels it has that the map lacks)."""

    reason: str
    unknown_labels: tuple[str, ...] = ()


def _stem(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _outputs(output_dir: Path, stem: str, instances: bool, overlays: bool) -> dict[str, Path]:
    out = {
        "image": output_dir / "images" / f"{stem}.png",
        "mask": output_dir / "masks" / f"{stem}.png",
    }
    if instances:
        out["instances"] = output_dir / "instances" / f"{stem}.png"
    if overlays:
        out["overlay"] = output_dir / "overlays" / f"{stem}.jpg"
    return out


def _up_to_date(path: Path, annotation, outputs: dict[str, Path]) -> bool:
    sources = [path.stat().st_mtime]
    if not annotation.image_data:
        sources.append(resolve_image_path(annotation).stat().st_mtime)
    return all(p.is_file() and p.stat().st_mtime >= max(sources) for p in outputs.values())


def _convert_one(path, output_dir, stem, ids, names, instances, overlays, force):
    """Converts one file. Returns `None` if skipped, a `_Failure`, or stats."""
    try:
        annotation = read_annotation(path)
        unknown = sorted({shape.label for shape in annotation.shapes} - ids.keys())
        if unknown:
            listed = ", ".join(map(repr, unknown))
            plural = "s" if len(unknown) > 1 else ""
            return _Failure(f"unknown label{plural} {listed} (not in the label map)",
                            tuple(unknown))
        outputs = _outputs(output_dir, stem, instances, overlays)
        if not force and _up_to_date(path, annotation, outputs):
            return None
        data, size = image_file_as_is(annotation) or (None, None)
        image = load_image(annotation, data) if data is None or overlays else None
        size = size or image.shape[:2]
        classes, instance_ids = rasterize(annotation.shapes, *size, ids, instances)
    except LabelMeError as err:
        return _Failure(err.reason)
    try:
        if data is not None:
            files.write_bytes(outputs["image"], data)
        else:
            files.save_image(outputs["image"], PIL.Image.fromarray(image), compress_level=1)
        save_mask(outputs["mask"], classes)
        if instances:
            save_instances(outputs["instances"], instance_ids)
        if overlays:
            files.save_image(outputs["overlay"], overlay(image, classes, names), quality=90)
    except OSError as err:
        return _Failure(f"cannot write {err.filename or output_dir}: {err.strerror or err}")
    drawn = {0, *(ids[shape.label] for shape in annotation.shapes)}
    return Counter(s.shape_type for s in annotation.shapes), _pixels_per_class(classes, drawn)


def _pixels_per_class(classes: np.ndarray, class_ids: set[int]) -> dict[int, int]:
    """Pixel counts of the classes present among `class_ids` (which must
    include every value of `classes`); a pass per class, faster than a
    histogram for the few classes one file has."""
    counts = {k: int(np.count_nonzero(classes == k)) for k in sorted(class_ids)}
    return {k: n for k, n in counts.items() if n}


_MAX_CHUNK = 16  # files per message to a worker process, at most


def _run(fn, items: list[tuple], bar=None, *, pool, workers) -> Iterable[tuple[int, object]]:
    """Yields `(index, fn(*items[index]))` as calls finish.

    Runs in `pool` (a process pool of `workers`), or in-process when it is
    `None`. Items go to the pool in chunks (a few per worker), which keeps
    the cost of passing messages small next to the work on one file. Closing
    the generator early (as `strict` mode does) cancels the chunks not
    started.
    """
    if pool is None:
        for index, item in enumerate(items):
            result = fn(*item)
            if bar is not None:
                bar.update()
            yield index, result
        return
    size = max(1, min(_MAX_CHUNK, len(items) // (4 * workers)))
    starts = range(0, len(items), size)
    futures = {pool.submit(_run_chunk, fn, items[i : i + size]): i for i in starts}
    try:
        for future in as_completed(futures):
            results = future.result()
            if bar is not None:
                bar.update(len(results))
            yield from enumerate(results, start=futures[future])
    finally:
        for future in futures:
            future.cancel()


def _run_chunk(fn, items: list[tuple]) -> list:
    return [fn(*item) for item in items]


# --- masks -> LabelMe -------------------------------------------------------


def mask_to_shapes(
    classes: np.ndarray,
    names: list[str],
    instances: np.ndarray | None = None,
    epsilon: float = 0.0,
    confidence: np.ndarray | None = None,
) -> list[dict]:
    """Class (and instance) masks to LabelMe polygon shapes.

    Every connected region (8-connectivity) becomes a polygon through its
    boundary pixels. Regions are listed largest first, so that a region lying
    inside another one's hole is drawn after it; holes become `_background_`
    polygons drawn over their surrounding region. Drawing the shapes back in
    order reproduces the mask up to the polygon simplification `epsilon`.

    Args:
        classes: `(H, W)` class ids (255 = ignore, written as `__ignore__`).
        names: Class names by id.
        instances: Optional `(H, W)` instance ids; each instance's regions
            become polygons sharing its id as `group_id`.
        epsilon: Douglas-Peucker tolerance in pixels (0 keeps every corner).
        confidence: Optional `(H, W)` per-pixel probabilities; each shape's
            `description` then gives their mean over its region
            (`"p=0.934"`).

    Returns:
        LabelMe shape dicts.

    Raises:
        ImportError: If OpenCV is not installed (extra `contours`).
    """
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "masks2labelme needs OpenCV: pip install 'keras-unet-kit[contours]'"
        ) from None
    classes = np.asarray(classes)
    if instances is not None:
        regions = [
            (int(k), int(np.bincount(classes[instances == k]).argmax()), instances == k)
            for k in np.unique(instances) if k != 0
        ]
        covered = instances != 0
        regions += [(None, int(c), (classes == c) & ~covered) for c in np.unique(classes)]
    else:
        regions = [(None, int(c), classes == c) for c in np.unique(classes)]
    polygons = []
    for group_id, class_id, binary in regions:
        polygons += _polygons(cv2, binary, class_id, group_id, names, epsilon, confidence,
                              skip_border_background=True)
    polygons.sort(key=lambda p: -p[0])
    shapes = [shape for _, shape in polygons]
    if epsilon == 0:
        shapes += _repairs(cv2, classes, instances, names, shapes, confidence)
    return shapes


def _polygons(cv2, binary, class_id, group_id, names, epsilon, confidence,
              skip_border_background=False) -> list[tuple[int, dict]]:
    """`(area, shape dict)` of each connected region (8-connectivity) of `binary`."""
    polygons = []
    count, components = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    for k in range(1, count):
        component = components == k
        if skip_border_background and class_id == 0 and _touches_border(component):
            continue  # plain background needs no shape
        contours, _ = cv2.findContours(
            component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        contour = max(contours, key=len)
        if epsilon > 0:
            contour = cv2.approxPolyDP(contour, epsilon, True)
        points = [[float(x), float(y)] for x, y in contour[:, 0]]
        points += [points[-1]] * (3 - len(points))  # 1-2 pixel regions
        polygons.append((int(component.sum()), {
            "label": IGNORE_LABEL if class_id == IGNORE_ID else names[class_id],
            "points": points,
            "group_id": group_id,
            "description": "" if confidence is None else (
                f"p={float(confidence[component].mean()):.3f}"),
            "shape_type": "polygon",
            "flags": {},
        }))
    return polygons


def _repairs(cv2, classes, instances, names, shapes, confidence, rounds: int = 3) -> list[dict]:
    """Small polygons, drawn last, for the pixels the polygons draw wrong.

    A polygon through pixel centres can cover a neighbour's pixel where a
    region meets a hole along a one-pixel diagonal (a later `_background_`
    polygon then takes pixels of the region back, or the other way round).
    With `epsilon=0` the shapes must draw the mask exactly, so the shapes
    are drawn here with `rasterize` and every wrong pixel region gets a
    polygon of its own.
    """
    ids = label_ids(names)
    repairs: list[dict] = []
    for _ in range(rounds):
        drawn, _ = rasterize([_parsed(s) for s in shapes + repairs], *classes.shape, ids,
                             with_instances=False)
        wrong = drawn != classes
        if not wrong.any():
            break
        for class_id in np.unique(classes[wrong]):
            binary = wrong & (classes == class_id)
            count, components = cv2.connectedComponents(binary.astype(np.uint8), 8)
            for k in range(1, count):
                region = components == k
                group = None
                if instances is not None and class_id != 0:
                    group = int(np.bincount(instances[region]).argmax()) or None
                repairs += [shape for _, shape in _polygons(
                    cv2, region, int(class_id), group, names, 0.0, confidence)]
    return repairs


def _parsed(shape: dict) -> Shape:
    return Shape(shape["label"], shape["shape_type"], [tuple(p) for p in shape["points"]],
                 shape["group_id"])


def _touches_border(region: np.ndarray) -> bool:
    return bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())


def masks_to_labelme(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    labels: str | os.PathLike | list[str],
    instances_dir: str | os.PathLike | None = None,
    foreground_value: int | None = None,
    epsilon: float = 0.0,
    embed_images: bool = False,
    progress: bool = False,
) -> ConversionSummary:
    """Writes a LabelMe JSON file per mask, beside a copy of its image.

    Masks are paired with images by file stem (`masks/a.png` <-> `images/a.*`).

    Args:
        images_dir: Folder of images.
        masks_dir: Folder of class-id masks (PNG).
        output_dir: Where the JSON files and the images go.
        labels: `labels.txt` path or class names by id.
        instances_dir: Optional folder of instance-id masks (same names).
        foreground_value: For binary masks stored as 0/N (e.g. 255): pixels
            equal to it become class 1, all others 0.
        epsilon: Polygon simplification tolerance in pixels.
        embed_images: Store the image as `imageData` in the JSON.
        progress: Show a progress bar.

    Returns:
        A `ConversionSummary` (pixels and shapes counted per class/type).
    """
    if isinstance(labels, (str, os.PathLike)):
        names = read_labels(labels)
    else:
        names = make_label_list(labels)
    images = {p.stem: p for p in sorted(Path(images_dir).iterdir()) if p.is_file()}
    masks = sorted(Path(masks_dir).glob("*.png"))
    output_dir = Path(output_dir)
    summary = ConversionSummary(files=len(masks), labels=names)
    for mask_path in tqdm(masks, desc="masks2labelme", unit="file",
                          disable=None if progress else True):
        image_path = images.get(mask_path.stem)
        if image_path is None:
            summary.errors.append((str(mask_path), "no image with this name"))
            continue
        try:
            classes = read_mask(mask_path, foreground_value)
            instance_ids = None
            if instances_dir is not None:
                instance_ids = read_instances(Path(instances_dir) / mask_path.name)
        except ReadError as err:
            summary.errors.append((str(mask_path), str(err).split(": ", 1)[-1]))
            continue
        shapes = mask_to_shapes(classes, names, instance_ids, epsilon)
        image_bytes = image_path.read_bytes()
        target = output_dir / image_path.name
        files.atomic_write(target, lambda tmp: tmp.write_bytes(image_bytes))
        document = labelme_document(shapes, image_path.name, *classes.shape,
                                    image_data=image_bytes if embed_images else None)
        files.write_text(output_dir / f"{mask_path.stem}.json", json.dumps(document, indent=1))
        summary.converted += 1
        summary.shapes.update(s["shape_type"] for s in shapes)
    files.write_text(output_dir / LABELS_FILE, labels_text(names))
    return summary
