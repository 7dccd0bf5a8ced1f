"""predict_image.py: every format and mode, EXIF orientation, and bad files that never end the batch."""
import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import data
import predict_image
import rundir

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _uniform(mode, size=(48, 40)):
    """An image of one colour in `mode`, and the RGB we expect after loading it."""
    if mode == "RGB":
        return Image.new("RGB", size, RED), RED
    if mode == "L":
        return Image.new("L", size, 100), (100, 100, 100)
    if mode == "LA":  # half-transparent black over white: mid grey
        return Image.new("LA", size, (0, 128)), (127, 127, 127)
    if mode == "RGBA":  # half-transparent red over white
        return Image.new("RGBA", size, RED + (128,)), (238, 142, 142)
    if mode == "P":
        return Image.new("RGB", size, BLUE).convert("P", palette=Image.Palette.ADAPTIVE), BLUE
    if mode == "PA":  # palette with a transparent index: white where transparent
        image = Image.new("P", size, 1)
        image.putpalette([0, 0, 0, *BLUE] + [0] * 762)
        image.info["transparency"] = 1
        return image, (255, 255, 255)
    if mode == "I;16":  # 16-bit: 32896 is 128 in 8 bits, not clipped white
        return Image.fromarray(np.full(size[::-1], 32896, np.uint16)), (128, 128, 128)
    if mode == "I":
        return Image.fromarray(np.full(size[::-1], 65535, np.int32), "I"), (255, 255, 255)
    if mode == "CMYK":  # pure cyan
        return Image.new("CMYK", size, (255, 0, 0, 0)), (0, 255, 255)
    if mode == "1":
        return Image.new("1", size, 1), (255, 255, 255)
    raise AssertionError(mode)


# Every mode the issue names, each in formats that can store it; every format at least once.
CASES = [("RGB", "JPEG"), ("RGB", "BMP"), ("RGB", "WEBP"), ("RGB", "TIFF"), ("L", "JPEG"), ("L", "PNG"),
         ("L", "BMP"), ("LA", "PNG"), ("RGBA", "PNG"), ("RGBA", "WEBP"), ("RGBA", "TIFF"), ("P", "GIF"),
         ("P", "PNG"), ("P", "BMP"), ("PA", "PNG"), ("PA", "GIF"), ("I;16", "PNG"), ("I;16", "TIFF"),
         ("I", "TIFF"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("1", "PNG"), ("1", "BMP"), ("1", "TIFF")]


@pytest.mark.parametrize("mode,fmt", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_every_mode_and_format_loads_as_rgb(tmp_path, mode, fmt):
    image, expected = _uniform(mode)
    path = tmp_path / f"image.{fmt.lower()}"
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "GIF" and "transparency" in image.info:
        kwargs["transparency"] = image.info["transparency"]
    image.save(path, fmt, **kwargs)
    pixels, thumbnail = predict_image.load_image(str(path))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert thumbnail.mode == "RGB" and thumbnail.size == (48, 40)
    tolerance = 12 if fmt in ("JPEG", "WEBP") else 2  # lossy formats shift colours a little
    assert np.abs(pixels.astype(int) - expected).max() <= tolerance, pixels[16, 16]


def test_exif_orientation_is_applied(tmp_path):
    # Stored landscape: red left half, blue right half. Orientation 6 says "rotate 90
    # degrees clockwise to display", so the upright image is portrait, red on top.
    stored = Image.new("RGB", (64, 32), BLUE)
    stored.paste(RED, (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    pixels, thumbnail = predict_image.load_image(str(path))
    assert thumbnail.size == (32, 64)
    assert np.abs(pixels[4, 16].astype(int) - RED).max() < 40
    assert np.abs(pixels[28, 16].astype(int) - BLUE).max() < 40


def test_antialiased_resize_of_a_large_photo(tmp_path):
    # A fine black-and-white checkerboard must average to grey, not alias to stripes.
    board = (np.indices((640, 640)).sum(axis=0) % 2 * 255).astype(np.uint8)
    path = tmp_path / "board.png"
    Image.fromarray(board).save(path)
    pixels, _ = predict_image.load_image(str(path))
    assert np.abs(pixels.astype(int) - 127).max() <= 3
    wide = tmp_path / "wide.png"
    Image.new("RGB", (300, 100), RED).save(wide)
    cropped, _ = predict_image.load_image(str(wide), fit="crop")
    assert cropped.shape == (32, 32, 3)


@pytest.mark.parametrize("size", [(300, 100), (101, 303)])
def test_crop_keeps_the_centre_square_and_squash_the_whole_photo(tmp_path, size):
    # Three bands across the longer side: red, green in the middle third, blue.
    wide = size[0] > size[1]
    bands = np.zeros((size[1], size[0], 3), np.uint8)
    third = max(size) // 3
    for index, colour in enumerate([RED, (30, 200, 30), BLUE]):
        band = slice(index * third, None if index == 2 else (index + 1) * third)
        bands[(slice(None), band) if wide else band] = colour
    path = tmp_path / "bands.png"
    Image.fromarray(bands).save(path)
    cropped, thumbnail = predict_image.load_image(str(path), fit="crop")
    # Green: the centre square. The outer pixel rows may take a little of the bands beside
    # it, which the resampling filter reaches, as it would in the whole photo.
    inside = cropped[:, 2:-2] if wide else cropped[2:-2]
    assert np.abs(inside.astype(int) - (30, 200, 30)).max() <= 2
    assert thumbnail.size == (min(size),) * 2  # the figure shows the same square, never enlarged
    squashed, _ = predict_image.load_image(str(path))
    edge = squashed[:, 0] if wide else squashed[0]
    assert np.abs(edge.astype(int) - RED).max() <= 2  # squash keeps the red band at the edge


def _png_claiming(width, height):
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _bad_files(folder):
    """Each kind of bad input the issue names -> the word its one-line error must contain."""
    good = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8))
    good.save(folder / "full.png")
    good.save(folder / "full.jpg", quality=90)
    (folder / "truncated.png").write_bytes((folder / "full.png").read_bytes()[:4000])
    (folder / "truncated.jpg").write_bytes((folder / "full.jpg").read_bytes()[:3000])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    (folder / "random.png").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))  # Pillow's error, above twice the limit
    (folder / "big.png").write_bytes(_png_claiming(20_000, 15_000))  # Pillow's warning, made an error
    (folder / "a_folder.jpg").mkdir()
    return {"missing.jpg": "no such file", "a_folder.jpg": "directory", "empty.jpg": "empty",
            "notes.jpg": "not an image", "truncated.png": "truncated", "truncated.jpg": "truncated",
            "random.png": "not an image", "bomb.png": "pixels", "big.png": "pixels"}


def test_bad_inputs_never_end_the_batch(trained_vgg16, tmp_path, capsys):
    bad = _bad_files(tmp_path)
    goods = []
    for name, mode in [("dog.jpg", "RGB"), ("cat.png", "RGBA"), ("grey.tiff", "I;16")]:
        image, _ = _uniform(mode, (120, 90))
        image.save(tmp_path / name)
        goods.append(str(tmp_path / name))
    paths = [goods[0]] + [str(tmp_path / name) for name in bad] + goods[1:]
    figure = tmp_path / "figure8.png"
    assert predict_image.main([trained_vgg16, *paths, "--save-figure", str(figure)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == len(bad)
    for name, reason in bad.items():
        line = next(line for line in lines if f"{tmp_path / name}:" in line)
        assert reason in line.lower() and "Traceback" not in line
    printed = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
    assert [line.split(":")[0] for line in printed] == goods  # the good images, in order
    for line in printed:
        guesses = line.split(": ", 1)[1].split(", ")
        assert len(guesses) == 3 and all(guess.endswith(" %") for guess in guesses)
    with Image.open(figure) as drawn:
        assert drawn.format == "PNG" and drawn.width > 600 and drawn.height > 3 * 200


def test_json_output_and_top_k(trained_vgg16, tmp_path, capsys):
    Image.new("RGB", (50, 50), RED).save(tmp_path / "red.webp")
    assert predict_image.main([trained_vgg16, str(tmp_path / "red.webp"), str(tmp_path / "gone.gif"),
                               "--json", "--top", "5"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "vgg16"
    good, bad = report["results"]
    # The same photo predicted here, apart from predict_files: load, standardize with the run's stats, predict.
    import keras
    model = keras.saving.load_model(os.path.join(trained_vgg16, rundir.MODEL_FILE))
    stats = data.load_stats(os.path.join(trained_vgg16, rundir.STATS_FILE))
    pixels, _ = predict_image.load_image(str(tmp_path / "red.webp"))
    expected = model.predict(data.standardize(pixels[None], stats), verbose=0)[0]
    np.testing.assert_allclose([good["probabilities"][name] for name in data.CLASS_NAMES], expected, atol=1e-5)
    ranked = [data.CLASS_NAMES[index] for index in np.argsort(-expected)[:5]]
    assert (np.diff(np.sort(expected)[::-1][:6]) < -1e-4).all()  # no near tie makes the order below arbitrary
    assert [guess["class"] for guess in good["top"]] == ranked and good["predicted"] == ranked[0]
    np.testing.assert_allclose([guess["probability"] for guess in good["top"]], np.sort(expected)[::-1][:5],
                               atol=1e-5)
    assert bad == {"file": str(tmp_path / "gone.gif"), "error": "no such file"}
    Image.new("RGB", (50, 50), BLUE).save(tmp_path / "blue.bmp")
    assert predict_image.main([trained_vgg16, str(tmp_path / "blue.bmp")]) == 0


@pytest.mark.parametrize("remove", [rundir.MODEL_FILE, rundir.STATS_FILE])
def test_run_folder_without_model_or_stats(trained_vgg16, run_copy, tmp_path, capsys, remove):
    run = run_copy(trained_vgg16)
    os.remove(os.path.join(run, remove))
    Image.new("RGB", (50, 50), RED).save(tmp_path / "red.png")
    with pytest.raises(SystemExit) as exit_info:
        predict_image.main([run, str(tmp_path / "red.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("predict_image.py: error: ") and remove in err and len(err.strip().splitlines()) == 1


def test_tta_averages_the_photo_and_its_mirror(trained_vgg16, tmp_path, capsys):
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    image.save(tmp_path / "photo.png")
    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "mirror.png")
    path, mirror = str(tmp_path / "photo.png"), str(tmp_path / "mirror.png")

    def probabilities(*options):
        assert predict_image.main([trained_vgg16, path, mirror, "--json", *options]) == 0
        results = json.loads(capsys.readouterr().out)["results"]
        return [np.array([r["probabilities"][name] for name in data.CLASS_NAMES]) for r in results]
    plain, flipped = probabilities()
    assert np.abs(plain - flipped).max() > 1e-4  # the two views really differ
    with_tta, mirror_tta = probabilities("--tta")
    np.testing.assert_allclose(with_tta, (plain + flipped) / 2, atol=1e-5)
    np.testing.assert_allclose(mirror_tta, with_tta, atol=1e-5)  # a photo and its mirror agree under TTA


def test_tta_flip_translate_moves_the_photo_one_pixel_each_way(trained_vgg16, tmp_path, capsys):
    import keras
    pixels = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    assert predict_image.main([trained_vgg16, str(tmp_path / "photo.png"), "--json", "--tta", "flip-translate"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    got = np.array([result["probabilities"][name] for name in data.CLASS_NAMES])

    model = keras.saving.load_model(os.path.join(trained_vgg16, rundir.MODEL_FILE))
    x = data.standardize(pixels[None], data.load_stats(os.path.join(trained_vgg16, rundir.STATS_FILE)))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
    views = [(0.25, x), (0.125, padded[:, :32, :32]), (0.125, padded[:, 2:, 2:])]
    expected = sum(weight * (model.predict(view, verbose=0) + model.predict(view[:, :, ::-1], verbose=0))
                   for weight, view in views)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_an_unknown_tta_mode_is_refused_in_one_line(trained_vgg16, tmp_path, capsys):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    with pytest.raises(SystemExit) as exit_info:
        predict_image.main([trained_vgg16, str(tmp_path / "red.png"), "--tta", "sideways"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "predict_image.py: error: argument --tta: invalid choice: 'sideways'" in err and "Traceback" not in err
