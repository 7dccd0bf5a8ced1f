"""Pilot runs: vgg16 or alexnet (--model) on the first N images of the report's split, once per spec of recipe overrides.

    python results/pilots/pilot.py --data-dir DIR --images 45000 --epochs 3 learning_rate=0.05 optimizer=adam,learning_rate=0.002
    python results/pilots/pilot.py --data-dir DIR --recipe regularized --images 45000 --epochs 3 cutout=0

Each spec (`key=value,...`, Settings field names) overrides the recipe (default: fast, as
the pilots in README.md used it); one line per spec gives the per-epoch training accuracy,
training loss and validation accuracy (clean, the first max(N // 10, 256) validation
images). Seed 0. The repository is this file's grandparent unless --repo says otherwise.
"""
import argparse
import dataclasses
import math
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        help="the repository's folder (default: the one holding this file)")
    parser.add_argument("--data-dir", required=True, help="an official CIFAR-10 layout (see data.py)")
    parser.add_argument("--model", default="vgg16", choices=("vgg16", "alexnet"), help="the network (default: vgg16)")
    parser.add_argument("--recipe", default="fast", help="the recipe the specs override (default: fast)")
    parser.add_argument("--images", type=int, required=True, help="training images (the first N of the split)")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="key=value,... overrides, one run each")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.repo)
    import keras
    import data
    import models
    import recipes
    import train
    x_train, y_train, x_valid, y_valid = train.load_split(args.data_dir, args.images, 256)
    stats = data.compute_stats(x_train)
    fields = {field.name: field for field in dataclasses.fields(recipes.Settings)}
    for spec in args.specs:
        changes = {}
        for key, value in (item.split("=") for item in spec.split(",") if item):
            changes[key] = fields[key].type(value) if fields[key].type is not bool else value == "1"
        settings = dataclasses.replace(recipes.recipe_settings(args.recipe), epochs=args.epochs, seed=0, **changes)
        settings = recipes.resolve_settings(args.model, settings)
        models.set_precision(settings.precision)
        keras.utils.set_random_seed(0)
        model = models.build_model(args.model, dropout_scale=settings.dropout_scale, bn_momentum=settings.bn_momentum)
        if settings.init != "keras":  # as train.py does for a new run
            models.initialize(model, settings.init, data.standardize(x_train[:models.WHITENING_IMAGES], stats))
        recipes.compile_model(model, settings, math.ceil(len(x_train) / settings.batch_size))
        inputs = train.make_inputs(settings, x_train, y_train, x_valid, y_valid, stats, 0, 0)
        history = model.fit(**inputs, epochs=args.epochs, verbose=0).history
        print(spec, "acc", [round(v, 3) for v in history["accuracy"]], "loss", [round(v, 2) for v in history["loss"]],
              "val_acc", [round(v, 3) for v in history["val_accuracy"]], flush=True)


if __name__ == "__main__":
    main()
