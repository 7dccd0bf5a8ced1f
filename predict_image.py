"""Classify your own photos with a trained run, as the paper's section 4.1 does.

    python predict_image.py runs/vgg16 dog.jpg cat.png --top 3 --save-figure dogs.png

Each image is read whatever its format (JPEG, PNG, BMP, GIF, WebP, TIFF, ...) and mode
(greyscale, alpha, palette, 16-bit, CMYK, 1-bit), turned upright from its EXIF
orientation, converted to RGB (transparent parts composited on white, as a viewer
shows them), resized to 32x32 with an antialiasing filter, standardized with the run's
own stats.json and classified. An image that cannot be read gets one line on stderr
naming the file and the reason; the others are still classified, and the exit status
is 2 if any failed.
"""
import contextlib
import json
import os
import sys
import warnings

import numpy as np

import data
import evaluate
import rundir
from rundir import UserError

DEFAULT_TOP = 3  # classes printed per image, as the paper's Figure 8 discusses the top guesses
IMAGE_SIZE = (32, 32)  # CIFAR-10's size, what the models take
# Refuse images whose header claims more pixels than this: it is above the largest phone
# cameras (200 MP), and keeps a hostile "decompression bomb" from exhausting memory.
MAX_IMAGE_PIXELS = 250_000_000
# LANCZOS averages over every source pixel it covers (no aliasing); reducing_gap first
# shrinks big images by whole factors with a box filter, which is quicker and as good.
RESAMPLING = "LANCZOS"
REDUCING_GAP = 3.0
BACKGROUND = (255, 255, 255)  # transparent pixels become white, as image viewers show them
FIT_MODES = ("squash", "crop")  # non-square photos: resize whole (the paper's way) or centre-crop first
THUMBNAIL_SIZE = 256  # pixels, the photo's longer side in --save-figure


class ImageReadError(UserError):
    """An image that cannot be classified (missing, not an image, truncated, too large)."""


@contextlib.contextmanager
def _strict_pillow():
    """Pillow with our pixel limit, its bomb warning turned into an error, truncated files refused."""
    from PIL import Image, ImageFile
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = MAX_IMAGE_PIXELS, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _to_rgb(image):
    """Any Pillow mode -> 8-bit RGB, with 16-bit and float images scaled rather than clipped."""
    from PIL import Image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit files load as I or I;16 with values 0-65535; Pillow's own convert would
        # clip them at 255 (an all-white image). Float images are taken to lie in [0, 1].
        top = 1.0 if image.mode == "F" and values.max(initial=0) <= 1 else 65535.0
        image = Image.fromarray(np.clip(np.round(values * 255 / top), 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path, fit="squash"):
    """Read one image file and return (uint8 (32, 32, 3) array, upright RGB thumbnail for figures).

    Raises:
        ImageReadError: with the reason, for anything that is not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    if not os.path.exists(path):
        raise ImageReadError("no such file")
    if os.path.isdir(path):
        raise ImageReadError("is a directory, not an image file")
    if os.path.getsize(path) == 0:
        raise ImageReadError("empty file")
    try:
        with _strict_pillow(), Image.open(path) as image:
            if image.format == "JPEG":  # decode a big JPEG at a reduced scale: far quicker, same result at 32x32
                image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except FileNotFoundError:
        raise ImageReadError("no such file") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image, or a format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(f"refused: its header claims more than {MAX_IMAGE_PIXELS:,} pixels "
                             "(a decompression bomb or an absurdly large image)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as error:
        # Pillow reports damaged files with all of these, depending on the format.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"truncated or corrupt image ({reason})") from None
    resampling = getattr(Image.Resampling, RESAMPLING)
    if fit == "crop":
        # The centre square, resized in one step: its box may start mid-pixel (no rounding
        # shifts it) and the filter reads the photo just outside it, as a resize of the
        # whole photo would. ImageOps.fit takes no reducing_gap: exact LANCZOS, about
        # 0.1 s for 24 megapixels. The figure shows the same square.
        small = ImageOps.fit(rgb, IMAGE_SIZE, resampling)
        side = min(THUMBNAIL_SIZE, *rgb.size)
        return np.asarray(small, dtype=np.uint8), ImageOps.fit(rgb, (side, side), Image.Resampling.LANCZOS)
    small = rgb.resize(IMAGE_SIZE, resampling, reducing_gap=REDUCING_GAP)
    thumbnail = rgb.copy()
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8), thumbnail


def load_run(run_dir):
    """(model, stats, model name) of a run folder; a UserError with one clear line otherwise."""
    import results
    rundir.check_run_dir(run_dir)
    results.check_record_has_model(run_dir)
    stats = data.load_stats(os.path.join(run_dir, rundir.STATS_FILE))
    import models  # TensorFlow: only once a model is needed
    model = models.load_model(run_dir)
    return model, stats, rundir.model_name(run_dir)


def classify(model, stats, images, tta=None):
    """Softmax probabilities (N, 10) for uint8 images (N, 32, 32, 3), standardized with `stats`.

    With `tta` (a mode of evaluate.TTA_MODES), the weighted average of the probabilities
    of each image's views, as evaluate.py --tta computes them.
    """
    import keras

    x = data.standardize(np.stack(images), stats)
    views = evaluate.tta_inputs(x, tta) if tta else [(1.0, x)]
    return sum(weight * np.asarray(keras.ops.convert_to_numpy(model(view, training=False)), dtype=np.float64)
               for weight, view in views)


def predict_files(run_dir, paths, top=DEFAULT_TOP, fit="squash", tta=None):
    """Classify image files with a run: (model name, one result dict per path, in order).

    A readable image gives {"file", "predicted", "top": [{"class", "probability"}, ...],
    "probabilities": {class: p}, "thumbnail": PIL image}; an unreadable one gives
    {"file", "error": reason}. `tta`: a TTA mode (see classify).
    """
    model, stats, name = load_run(run_dir)
    results, images = [], []
    for path in paths:
        try:
            pixels, thumbnail = load_image(path, fit)
        except ImageReadError as error:
            results.append({"file": path, "error": str(error)})
            continue
        images.append(pixels)
        results.append({"file": path, "thumbnail": thumbnail})
    if images:
        probabilities = iter(classify(model, stats, images, tta))
        for result in results:
            if "error" in result:
                continue
            row = next(probabilities)
            order = np.argsort(-row, kind="stable")
            result["predicted"] = data.CLASS_NAMES[order[0]]
            result["top"] = [{"class": data.CLASS_NAMES[i], "probability": float(row[i])} for i in order[:top]]
            result["probabilities"] = {label: float(p) for label, p in zip(data.CLASS_NAMES, row)}
    return name, results


def plot_predictions(results, title, path):
    """A figure like the paper's Figure 8: each photo with its predicted class, beside a bar chart."""
    import plots
    plt = plots.pyplot()
    good = [result for result in results if "error" not in result]
    figure, grid = plt.subplots(len(good), 2, figsize=(6.4, 2.4 * len(good)), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 1.6]})
    positions = np.arange(len(data.CLASS_NAMES))
    for (photo, bars), result in zip(grid, good):
        probability = result["probabilities"][result["predicted"]]
        photo.imshow(result["thumbnail"])
        photo.axis("off")
        photo.set_title(f"{os.path.basename(result['file'])}\n"
                        f"predicted: {result['predicted']} ({100 * probability:.1f} %)", fontsize=9)
        values = [100 * result["probabilities"][name] for name in data.CLASS_NAMES]
        colours = ["tab:orange" if name == result["predicted"] else "tab:blue" for name in data.CLASS_NAMES]
        bars.barh(positions, values, color=colours)
        bars.set_yticks(positions, data.CLASS_NAMES, fontsize=8)
        bars.invert_yaxis()  # airplane at the top, in CIFAR-10's order
        bars.set_xlim(0, 100)
        bars.set_xlabel("Probability (%)")
        bars.grid(axis="x", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return plots.save_figure(figure, path)


def format_result(result):
    """One line per image: `file: class p %, class p %, ...` (or the error)."""
    if "error" in result:
        return f"{result['file']}: {result['error']}"
    guesses = ", ".join(f"{guess['class']} {100 * guess['probability']:.1f} %" for guess in result["top"])
    return f"{result['file']}: {guesses}"


@rundir.one_line_errors("predict_image.py")
def main(argv=None):
    parser = rundir.ArgumentParser(
        prog="predict_image.py", description="Classify image files with a trained run folder "
        "(the paper's section 4.1): print the top classes with their probabilities.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by train.py, or a record kept "
                        "with its model by results.py collect --with-model (e.g. results/vgg16_long_80ep_split0_seed1)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, any format Pillow reads")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP,
                        help=f"classes to print per image (default: {DEFAULT_TOP})")
    parser.add_argument("--fit", choices=FIT_MODES, default="squash",
                        help="non-square images: squash the whole image to 32x32 (default) or crop "
                        "the centre square first")
    parser.add_argument("--tta", nargs="?", const="flip", choices=tuple(evaluate.TTA_MODES), help="test-time augmentation, as "
                        "evaluate.py --tta: flip (the default MODE) averages each image with its mirror; "
                        "flip-translate adds both moved 1 px down-right and up-left")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--save-figure", metavar="PATH",
                        help="also draw each photo with its prediction and probabilities (.png, .pdf or .svg)")
    args = parser.parse_args(argv)
    if not 1 <= args.top <= data.NUM_CLASSES:
        raise UserError(f"--top must be between 1 and {data.NUM_CLASSES}, received {args.top}")
    if args.save_figure:
        import plots
        extension = os.path.splitext(args.save_figure)[1].lower().lstrip(".")
        if extension not in plots.FORMATS:
            raise UserError(f"--save-figure {args.save_figure}: use a .png, .pdf or .svg name")
    model_name, results = predict_files(args.run_dir, args.images, args.top, args.fit, args.tta)
    failed = [result for result in results if "error" in result]
    for result in failed:
        print(f"predict_image.py: {format_result(result)}", file=sys.stderr)
    if args.json:
        public = [{key: value for key, value in result.items() if key != "thumbnail"} for result in results]
        print(json.dumps({"run_dir": args.run_dir, "model": model_name, "results": public}, indent=2))
    else:
        for result in results:
            if "error" not in result:
                print(format_result(result))
    if args.save_figure and len(failed) < len(results):
        plot_predictions(results, f"Out-of-set images classified by {model_name} (cf. Figure 8)",
                         args.save_figure)
        print(f"wrote {args.save_figure}", file=sys.stderr if args.json else sys.stdout)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
