"""`labelme2masks` and `masks2labelme`: datasets between LabelMe and masks."""

from __future__ import annotations

from keras_unet.cli.types import non_negative_float, non_negative_int, positive_int


def add_parsers(add) -> None:
    """Adds the conversion commands (`add(name, ...)` makes a subparser)."""
    l2m = add("labelme2masks", help="LabelMe JSON folder -> training dataset",
              description="Converts every LabelMe .json file below INPUT into a training "
                          "dataset (images/, masks/, labels.txt). Bad files are listed with "
                          "their reason, the others converted; exit code 1 if any failed.")
    l2m.add_argument("input", help="folder searched recursively for LabelMe .json files")
    l2m.add_argument("output", help="dataset folder to write")
    l2m.add_argument("--labels", help="labels.txt (default: every label found, sorted)")
    l2m.add_argument("--instances", action="store_true", help="also write instance masks")
    l2m.add_argument("--overlays", action="store_true", help="also write overlay pictures")
    l2m.add_argument("--force", action="store_true", help="rewrite up-to-date outputs")
    l2m.add_argument("--strict", action="store_true", help="stop at the first bad file")
    l2m.add_argument("--workers", type=positive_int, default=None,
                     help="processes (default: all cores)")
    l2m.set_defaults(func=labelme2masks)

    m2l = add("masks2labelme", help="mask dataset -> LabelMe JSON polygons")
    m2l.add_argument("images", help="folder of images")
    m2l.add_argument("masks", help="folder of class-id mask PNGs (same stems)")
    m2l.add_argument("output", help="folder for the JSON files and images")
    m2l.add_argument("--labels", required=True, help="labels.txt of the masks")
    m2l.add_argument("--instances", help="folder of instance-id PNGs (same names)")
    m2l.add_argument("--foreground-value", type=non_negative_int,
                     help="binary masks: the mask value of class 1")
    m2l.add_argument("--epsilon", type=non_negative_float, default=0.0,
                     help="polygon simplification tolerance in pixels")
    m2l.add_argument("--embed-images", action="store_true", help="store imageData in JSON")
    m2l.set_defaults(func=masks2labelme)


def labelme2masks(args) -> int:
    """Runs `labelme2masks`."""
    from keras_unet.data.convert import labelme_to_masks

    summary = labelme_to_masks(
        args.input, args.output, labels=args.labels, instances=args.instances,
        overlays=args.overlays, force=args.force, strict=args.strict, workers=args.workers,
        progress=True,
    )
    print(summary.format())
    print(f"dataset written to {args.output} ({len(summary.labels) - 1} classes)")
    return 1 if summary.errors else 0


def masks2labelme(args) -> int:
    """Runs `masks2labelme`."""
    from keras_unet.data.convert import masks_to_labelme

    summary = masks_to_labelme(
        args.images, args.masks, args.output, labels=args.labels,
        instances_dir=args.instances, foreground_value=args.foreground_value,
        epsilon=args.epsilon, embed_images=args.embed_images, progress=True,
    )
    print(summary.format())
    return 1 if summary.errors else 0
