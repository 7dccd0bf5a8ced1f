"""What a run trains with: every setting declared once, the named recipes, their checks, and the
builders of the optimizer, its schedule, the loss and the callbacks.

    settings = recipes.recipe_settings("short", "vgg16")           # a recipe's Settings for a network
    settings = dataclasses.replace(settings, epochs=10, seed=0)    # what flags do
    recipes.check_settings("vgg16", settings)                      # UserError naming a bad value
    recipes.compile_model(model, settings, steps_per_epoch)

The defaults of Settings are the paper's protocol (Gomez Cruz 2025, section 3); RECIPES
names other sets of values for each network it serves (airbench's one hyperparameter dict
per variant). train.py reads them; its command line has one flag per Settings field.
"""
import dataclasses
import importlib.util
import math
import os

import rundir  # first: it quiets TensorFlow's C++ start-up logging before TF loads
from rundir import UserError

import keras
import tensorflow as tf

import augment
import data
import models

AUGMENTATIONS = ("idg", "fast", "crop", "none")
PRECISIONS = ("float32", "mixed", "auto")
STRATEGIES = ("none", "mirrored", "multiworker")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("plateau", "cosine", "linear")
CONTINUOUS_SCHEDULES = ("cosine", "linear")  # per-step rates sized from --epochs: no cuts, no early stop
CUTOUT_AUGMENTATIONS = ("crop", "fast")  # the tf.data pipelines, which apply --cutout


def _setting(default, about, **cli):
    """A Settings field: its default and one line of unit and source (the --help text too).

    `when=(field, values)` marks a setting that only the runs with field in values use;
    giving it on the command line otherwise is refused (see check_flags_used).
    """
    return dataclasses.field(default=default, metadata={"about": about, **cli})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every training setting, declared once with its unit and source; the command line overrides them.

    The defaults are the paper's protocol; RECIPES below names other sets of values.
    """

    recipe: str = _setting("paper", "the named set of defaults the run starts from (RECIPES); flags "
                           "override its values")
    # The paper's protocol: Gomez Cruz 2025, section 3, the compile/callbacks/fit listing.
    epochs: int = _setting(300, "maximum epochs (passes over the training split); paper: 300")
    batch_size: int = _setting(64, "images per step, the global batch across devices; paper: 64")
    validation_split: float = _setting(data.VALIDATION_FRACTION, "the share of the 50,000 training images "
                                       "held out for validation (train_test_split, random_state=0); 0: train on "
                                       "all 50,000 and validate on none (cosine and linear schedules only: "
                                       "plateau watches val_loss); paper: 0.1")
    optimizer: str = _setting("adam", "adam: Adam; sgd: SGD with Nesterov momentum; paper: adam",
                              choices=OPTIMIZERS)
    learning_rate: float = _setting(5e-4, "the optimizer's initial step size (a cosine or linear schedule's peak); "
                                    "paper: 5e-4")
    momentum: float = _setting(0.9, "SGD's Nesterov momentum", when=("optimizer", ("sgd",)))
    weight_decay: float = _setting(0.0, "decoupled weight decay: each step multiplies the conv and dense "
                                   "kernels by (1 - learning_rate * this); biases and BatchNorm are "
                                   "exempt; paper: none")
    classifier_lr_scale: float = _setting(1.0, "multiplies the learning rate of the classifier (the "
                                          "'predictions' layer) only; for SGD, s**2 here trains as logits "
                                          "scaled by s (Page's ResNet-9, airbench: s = 1/8, so 1/64); paper: 1")
    label_smoothing: float = _setting(0.0, "cross-entropy against targets (1 - this) one-hot + this / 10; "
                                      "paper: none")
    schedule: str = _setting("plateau", "plateau: ReduceLROnPlateau and EarlyStopping on val_loss, "
                             "model.keras the best epoch (paper); cosine: per-step linear warm-up then "
                             "cosine decay to min_lr at the last epoch, no cuts, no early stop, "
                             "model.keras the last epoch; linear: the same with a straight-line decay "
                             "(one-cycle: Page's ResNet-9, airbench; Li et al. 2020's budgeted "
                             "training)", choices=SCHEDULES)
    warmup_fraction: float = _setting(0.0, "cosine, linear: the share of the run's steps spent rising "
                                      "linearly from 0 to learning_rate", when=("schedule", CONTINUOUS_SCHEDULES))
    lr_factor: float = _setting(0.5, "ReduceLROnPlateau multiplies the learning rate by this; paper: 0.5",
                                when=("schedule", ("plateau",)))
    lr_patience: int = _setting(10, "epochs without val_loss improvement before the learning rate is cut; "
                                "paper: 10", when=("schedule", ("plateau",)))
    min_lr: float = _setting(1e-5, "floor of the learning rate (plateau) or its value at the last step "
                             "(cosine, linear); paper: 1e-5")
    lr_min_delta: float = _setting(1e-4, "smallest val_loss decrease ReduceLROnPlateau counts as an "
                                   "improvement; Keras' default, which the paper kept",
                                   when=("schedule", ("plateau",)))
    stop_patience: int = _setting(40, "epochs without val_loss improvement before training stops and the "
                                  "best weights are restored; paper: 40", when=("schedule", ("plateau",)))
    stop_min_delta: float = _setting(0.0, "smallest val_loss decrease EarlyStopping counts as an "
                                     "improvement; Keras' default, which the paper kept",
                                     when=("schedule", ("plateau",)))
    augmentation: str = _setting("idg", "idg: the paper's ImageDataGenerator (faithful, one CPU thread); "
                                 "fast: augment.py's tf.data equivalent; crop: random pad-and-crop "
                                 "(--crop-padding pixels) and flip; none", choices=AUGMENTATIONS)
    cutout: int = _setting(0, "side in pixels of one square zeroed at a random place in each training image "
                           "after crop and flip (Cutout, DeVries & Taylor 2017); 0: none; paper: none",
                           when=("augmentation", CUTOUT_AUGMENTATIONS))
    policy: str = _setting("none", "a per-image augmentation policy after crop and flip: randaugment: "
                           "keras.layers.RandAugment (Cubuk et al. 2020; 2 ops an image, magnitude 0.5); "
                           "paper: none", choices=("none", *augment.POLICIES),
                           when=("augmentation", CUTOUT_AUGMENTATIONS))
    erasing: float = _setting(0.0, "probability that keras.layers.RandomErasing fills a random rectangle "
                              "(2-33 %% of the image) of a training image with noise (Zhong et al. 2020: "
                              "0.5 on CIFAR-10); 0: none; paper: none",
                              when=("augmentation", CUTOUT_AUGMENTATIONS))
    mixing: str = _setting("none", "mix pairs of training images and their labels: mixup: keras.layers.MixUp "
                           "(Zhang et al. 2018); cutmix: keras.layers.CutMix (Yun et al. 2019); paper: none",
                           choices=("none", *augment.MIXINGS), when=("augmentation", CUTOUT_AUGMENTATIONS))
    mixing_alpha: float = _setting(1.0, "the mixing weight's Beta(alpha, alpha); both papers use 1 on CIFAR",
                                   when=("mixing", tuple(augment.MIXINGS)))
    refine_epochs: int = _setting(0, "the last N epochs train on the crop and flip alone: Cutout, the policy, "
                                  "RandomErasing and mixing off (He et al. 2019's refined augmentation); "
                                  "0: none; paper: none", when=("augmentation", CUTOUT_AUGMENTATIONS))
    crop_padding: int = _setting(4, "crop: the largest random shift in pixels each way (pad-and-crop with "
                                 "reflected edges); He et al. 2016 and Page's ResNet-9: 4; airbench94 at its "
                                 "10 epochs: 2", when=("augmentation", ("crop",)))
    augment_validation: bool = _setting(False, "augment the validation images too, as the paper did (its "
                                        "validation figures are on augmented images); default: clean")
    dropout_scale: float = _setting(1.0, "multiplies every dropout rate of the model (models.py's; the "
                                    "paper gives none); 0 turns dropout off")
    bn_momentum: float = _setting(0.99, "BatchNormalization's moving-average momentum; Keras' default, "
                                  "which the paper kept")
    ema_momentum: float = _setting(0.0, "an exponential moving average of the weights (BatchNorm's statistics "
                                   "too), validated and saved as model.keras: every --ema-every steps, "
                                   "average = m * average + (1 - m) * weights, m warming up as "
                                   "min(this, (1 + n) / (10 + n)) at the n-th update "
                                   "(tf.train.ExponentialMovingAverage's); 0: none; paper: none",
                                   when=("schedule", CONTINUOUS_SCHEDULES))
    ema_every: int = _setting(5, "steps between two updates of the weights' average (--ema-momentum)",
                              when=("schedule", CONTINUOUS_SCHEDULES))
    swa_epochs: int = _setting(0, "stochastic weight averaging (Izmailov et al. 2018): the schedule reaches "
                               "--min-lr N epochs before the end and holds it, and the plain mean of the "
                               "weights at the end of each of those N epochs, with BatchNorm's statistics "
                               "recomputed for it, is validated and saved as model.keras; 0: none; paper: none",
                               when=("schedule", CONTINUOUS_SCHEDULES))
    init: str = _setting("keras", "the convolutions' initial kernels: keras: Glorot uniform, Keras' default "
                         "(paper); whiten: the first convolution whitens the training images' patches; "
                         "dirac: each later convolution starts as the identity on its first in-channels "
                         "filters; whiten-dirac: both (airbench)", choices=models.INITS)
    weights: str = _setting("imagenet", "vgg16_pretrained's base: imagenet, none (random) or PATH to "
                            "Keras' VGG16 notop .h5; paper: imagenet")
    image_size: int = _setting(models.PRETRAINED_IMAGE_SIZE, "vgg16_pretrained: the side images are resized to "
                               "before the base; paper: 224")
    preprocessing: str = _setting("standardize", "vgg16_pretrained's input: standardize: the paper's global "
                                  "mean/std in the data pipeline; imagenet: 0-255 pixels into the model, which "
                                  "applies keras.applications.vgg16.preprocess_input itself (what ImageNet "
                                  "weights expect); paper: standardize", choices=models.PREPROCESSINGS)
    cache_features: bool = _setting(False, "vgg16_pretrained: compute the frozen base's output once (each "
                                    "training image, its mirror, each validation image; float16 under "
                                    "--cache-dir) and train the head on it: the head sees flips only, "
                                    "--augmentation applies to fine-tuning; paper: no")
    fine_tune_epochs: int = _setting(0, "vgg16_pretrained: epochs after --epochs with the base's "
                                     "--fine-tune-blocks unfrozen, at --fine-tune-learning-rate, on augmented "
                                     "images (Keras' transfer-learning guide); paper: 0")
    fine_tune_blocks: str = _setting("block5", "vgg16_pretrained: the base's blocks fine-tuning unfreezes, "
                                     "comma-separated (block1 to block5)")
    fine_tune_learning_rate: float = _setting(1e-5, "fine-tuning's constant Adam/SGD step size (Keras' "
                                              "transfer-learning guide: 1e-5)")
    # Ours, not the paper's: reproducibility, scale, smoke runs.
    seed: int = _setting(None, "seed of initial weights, augmentation and shuffling (the validation split "
                         "is always the paper's random_state=0); default: drawn at random, saved in "
                         "config.json")
    limit: int = _setting(None, "smoke runs: train on the first N images of the training split (45,000, "
                          "or 50,000 with --validation-split 0) and validate on the first max(N // 10, "
                          "batch size) of the held-out ones; default: all")
    precision: str = _setting("float32", "float32; mixed (bfloat16 on CPU, float16 on GPU); auto: mixed on a "
                              "CPU with native bfloat16 (AVX-512 BF16 or AMX), float32 elsewhere, where bfloat16 is "
                              "emulated and far slower (docs/performance.md); config.json keeps the "
                              "resolved value; paper: float32", choices=PRECISIONS)
    steps_per_execution: int = _setting(1, "training steps per compiled call; more cuts per-step "
                                        "overhead on fast GPUs")
    distribute: str = _setting("none", "none; mirrored: all local GPUs (tf.distribute.MirroredStrategy); "
                               "multiworker: MultiWorkerMirroredStrategy from TF_CONFIG", choices=STRATEGIES)
    deterministic: bool = _setting(False, "deterministic TensorFlow ops (slower), for repeatable runs "
                                   "with --seed")
    tensorboard: bool = _setting(False, "write TensorBoard logs into RUN_DIR/tensorboard")


# --- Recipes: named sets of Settings values per network (airbench's one dict per variant) ---
# A recipe lists only what it changes from the defaults above (the paper's protocol). Each
# value is the best measured for that network at that budget (docs/recipes.md, "What was measured").

# Short-schedule training as in He et al. 2016, Page's ResNet-9 (DAWNBench) and airbench94.
_SGD_COSINE = {
    "optimizer": "sgd",  # Nesterov SGD, the optimizer of the sub-35-epoch CIFAR-10 records
    "learning_rate": 0.1,  # peak of the schedule
    "classifier_lr_scale": 1 / 64,  # SGD's equivalent of Page's and airbench's logits x 1/8: no blow-up
    "label_smoothing": 0.1,  # Szegedy et al. 2016; airbench uses 0.2
    "schedule": "cosine",  # per step, sized from --epochs: short runs decay fully too
    "warmup_fraction": 0.15,  # Page and airbench warm up over roughly the first fifth
    "min_lr": 0.0,  # decay to zero at the last step, so the last epoch is the settled model
    "augmentation": "crop",  # random pad-and-crop and flip, the standard CIFAR-10 augmentation
    "dropout_scale": 0.0,  # none, as in the speed records: short runs underfit
    "bn_momentum": 0.9,  # 0.99 lags in runs of a few thousand steps (airbench: 0.6)
    "init": "whiten-dirac",  # airbench's: the fastest start
    "batch_size": 128,  # twice the paper's: as fast an epoch on CPUs as 256, and more steps
    "precision": "auto",  # bfloat16 where the CPU has it natively (docs/performance.md)
}
_VGG16_SHORT = {**_SGD_COSINE, "epochs": 30, "weight_decay": 5e-3, "cutout": 8}  # Cutout: Page's 8x8

RECIPES = {
    "paper": {"vgg16": {}, "alexnet": {}, "vgg16_pretrained": {}},  # Settings' defaults
    "ten": {"vgg16": {**_VGG16_SHORT, "epochs": 10,
                      "weight_decay": 2e-3,  # little to regularize at 10 epochs
                      "cutout": 0, "crop_padding": 2}},  # airbench94's at its 10 epochs
    "short": {"vgg16": _VGG16_SHORT,
              "alexnet": {**_SGD_COSINE, "epochs": 30, "weight_decay": 5e-4, "crop_padding": 2}},
    "long": {"vgg16": {**_VGG16_SHORT, "epochs": 80,  # fits an hour on 2 AMX cores in bfloat16 (docs/recipes.md)
                       "validation_split": 0.0,  # all 50,000: the cosine needs no validation to watch
                       "cutout": 12}},  # between Page's 8x8 at 24 epochs and DeVries & Taylor's 16x16 at 200
    "transfer": {"vgg16_pretrained": {
        "epochs": 10,  # the head's epochs: the report's vgg16_pretrained run
        "preprocessing": "imagenet",  # what Keras' ImageNet weights expect, not the report's N(0, 1)
        "cache_features": True,  # the frozen base's output is the same every epoch: compute it once
        "fine_tune_epochs": 3,  # then block5 unfrozen at 1e-5 (Keras' transfer-learning guide)
        "augmentation": "crop"}},  # for fine-tuning
}
RECIPE_PURPOSES = {
    "paper": "the report's protocol: Adam 5e-4, batch 64, plateau cuts, early stop, up to 300 epochs",
    "ten": "the most accuracy in 10 epochs",
    "short": "the best 30-epoch settings for each network from scratch",
    "long": "the report's 90 %: 80 epochs on all 50,000 images",
    "transfer": "the head on cached ImageNet features, then block5 fine-tuned",
}
# Names a user may still type or find in an old run's config.json, and what replaces them.
REMOVED_RECIPES = {"fast": "short", "nesterov": "short", "regularized": "short"}

# Settings only vgg16_pretrained reads; --FLAG for another model is refused.
PRETRAINED_ONLY = ("weights", "image_size", "preprocessing", "cache_features", "fine_tune_epochs",
                   "fine_tune_blocks", "fine_tune_learning_rate")


def recipe_settings(recipe, model_name):
    """The Settings a recipe declares for a network (UserError for a removed or unknown name, or
    a network the recipe does not serve)."""
    if recipe in REMOVED_RECIPES:
        raise UserError(f"recipe '{recipe}' was removed; use --recipe {REMOVED_RECIPES[recipe]}, which gives "
                        f"each network its best measured settings (docs/recipes.md)")
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    if model_name not in RECIPES[recipe]:
        raise UserError(f"recipe '{recipe}' does not serve {model_name}; recipes for {model_name}: "
                        + ", ".join(name for name, served in RECIPES.items() if model_name in served))
    return Settings(recipe=recipe, **RECIPES[recipe][model_name])


def check_flags_used(settings, explicit):
    """UserError for a flag given explicitly that the resolved settings never read."""
    if "ema_every" in explicit and not settings.ema_momentum and explicit["ema_every"] != Settings.ema_every:
        raise UserError(f"--ema-every is not used with --ema-momentum 0 (recipe {settings.recipe}); it applies "
                        "to runs that average their weights")
    for name in ("fine_tune_blocks", "fine_tune_learning_rate"):
        if name in explicit and not settings.fine_tune_epochs:
            raise UserError(f"--{name.replace('_', '-')} is not used with --fine-tune-epochs 0 (recipe "
                            f"{settings.recipe}); it applies to runs that fine-tune")
    for field in dataclasses.fields(Settings):
        when = field.metadata.get("when")
        # An explicit "off" (the declared default, e.g. --cutout 0) is always accepted: it is
        # what resolve_settings records for a setting the run does not read.
        if (field.name in explicit and when and getattr(settings, when[0]) not in when[1]
                and explicit[field.name] != field.default):
            flag, by = "--" + field.name.replace("_", "-"), "--" + when[0].replace("_", "-")
            raise UserError(f"{flag} is not used with {by} {getattr(settings, when[0])} (recipe "
                            f"{settings.recipe}); it applies to {by} {' or '.join(when[1])}")


# Settings that do not change what is trained, so --resume may take new values for them
# (a run started on one machine can finish on another).
RESUME_MAY_CHANGE = frozenset({"distribute", "deterministic", "steps_per_execution", "tensorboard"})


def check_settings(model_name, settings):
    """UserError naming the first unusable value (model name, counts, rates, combinations)."""
    if model_name not in models.MODELS:
        raise UserError(f"unknown model '{model_name}'; choose one of {', '.join(models.MODELS)}")
    s = settings
    for name, value, low in (("epochs", s.epochs, 1), ("batch size", s.batch_size, 1),
                             ("lr patience", s.lr_patience, 0), ("stop patience", s.stop_patience, 0),
                             ("steps per execution", s.steps_per_execution, 1)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"{name} must be an integer >= {low}, received {value!r}")
    if s.limit is not None and (not isinstance(s.limit, int) or s.limit < 1):
        raise UserError(f"--limit must be a positive number of images, received {s.limit!r}")
    if s.seed is not None and (not isinstance(s.seed, int) or not 0 <= s.seed < 2**31):
        raise UserError(f"--seed must be an integer in [0, 2**31), received {s.seed!r}")
    if not (math.isfinite(s.learning_rate) and s.learning_rate > 0):
        raise UserError(f"learning rate must be > 0, received {s.learning_rate!r}")
    if not 0 < s.lr_factor < 1:
        raise UserError(f"lr factor must lie strictly between 0 and 1, received {s.lr_factor!r}")
    for name, value in (("min lr", s.min_lr), ("lr min delta", s.lr_min_delta),
                        ("stop min delta", s.stop_min_delta)):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name} must be >= 0, received {value!r}")
    # A removed recipe's name stays valid in the settings an old run folder saved (--resume).
    for name, value, choices in (("recipe", s.recipe, (*RECIPES, *REMOVED_RECIPES)),
                                 ("augmentation", s.augmentation, AUGMENTATIONS),
                                 ("precision", s.precision, PRECISIONS),
                                 ("distribute", s.distribute, STRATEGIES),
                                 ("optimizer", s.optimizer, OPTIMIZERS),
                                 ("schedule", s.schedule, SCHEDULES),
                                 ("init", s.init, models.INITS),
                                 ("policy", s.policy, ("none", *augment.POLICIES)),
                                 ("mixing", s.mixing, ("none", *augment.MIXINGS))):
        if value not in choices:
            raise UserError(f"unknown {name} '{value}'; choose one of {', '.join(choices)}")
    for name, value in (("momentum", s.momentum), ("label smoothing", s.label_smoothing),
                        ("warmup fraction", s.warmup_fraction), ("bn momentum", s.bn_momentum)):
        if not (math.isfinite(value) and 0 <= value < 1):
            raise UserError(f"{name} must lie in [0, 1), received {value!r}")
    if not isinstance(s.cutout, int) or not 0 <= s.cutout <= 32:
        raise UserError(f"cutout must be a square's side in pixels, 0 to 32, received {s.cutout!r}")
    if not (math.isfinite(s.erasing) and 0 <= s.erasing <= 1):
        raise UserError(f"erasing is a probability, 0 to 1, received {s.erasing!r}")
    if not (math.isfinite(s.mixing_alpha) and s.mixing_alpha > 0):
        raise UserError(f"mixing alpha must be > 0, received {s.mixing_alpha!r}")
    if s.refine_epochs:
        if not isinstance(s.refine_epochs, int) or not 0 < s.refine_epochs < s.epochs:
            raise UserError(f"refine epochs must be an integer from 0 to epochs - 1 ({s.epochs - 1}), "
                            f"received {s.refine_epochs!r}")
        if s.schedule not in CONTINUOUS_SCHEDULES or model_name == "vgg16_pretrained":
            # A plateau run may stop at any epoch, so its last N epochs are not known in advance.
            raise UserError(f"--refine-epochs needs vgg16 or alexnet with --schedule "
                            f"{' or '.join(CONTINUOUS_SCHEDULES)}, not {model_name} with {s.schedule}")
        if not (s.cutout or s.policy != "none" or s.erasing or s.mixing != "none"):
            raise UserError("--refine-epochs turns Cutout, --policy, --erasing and --mixing off for the last "
                            "epochs, and this run uses none of them")
    if not isinstance(s.crop_padding, int) or not 0 <= s.crop_padding <= 16:
        raise UserError(f"crop padding must be a shift in pixels, 0 to 16, received {s.crop_padding!r}")
    if not (math.isfinite(s.classifier_lr_scale) and s.classifier_lr_scale > 0):
        raise UserError(f"classifier lr scale must be > 0, received {s.classifier_lr_scale!r}")
    for name, value in (("weight decay", s.weight_decay), ("dropout scale", s.dropout_scale)):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name} must be >= 0, received {value!r}")
    highest = max(models.DROPOUT_RATES[model_name]) * s.dropout_scale
    if highest >= 1:
        raise UserError(f"dropout scale {s.dropout_scale!r} makes a dropout rate of {highest:g}; "
                        f"rates must stay below 1")
    if not (math.isfinite(s.ema_momentum) and 0 <= s.ema_momentum < 1):
        raise UserError(f"ema momentum must lie in [0, 1), received {s.ema_momentum!r}")
    if not isinstance(s.ema_every, int) or s.ema_every < 1:
        raise UserError(f"ema every must be an integer >= 1, received {s.ema_every!r}")
    if s.ema_momentum and s.schedule not in CONTINUOUS_SCHEDULES:
        # The command line refuses the flag there already (its `when`); this guards train.train()'s callers.
        # EarlyStopping's best weights and ReduceLROnPlateau would watch the trained weights, not the average.
        raise UserError(f"--ema-momentum needs --schedule {' or '.join(CONTINUOUS_SCHEDULES)}, not {s.schedule}")
    if s.ema_momentum and (model_name == "vgg16_pretrained" or s.distribute != "none"):
        raise UserError("--ema-momentum applies to vgg16 and alexnet trained on one device (--distribute none)")
    if s.ema_momentum and s.steps_per_execution != 1:
        # Keras calls a callback once per execution, so several steps' updates would all see its last weights.
        raise UserError(f"--ema-momentum updates between steps; it needs --steps-per-execution 1, "
                        f"not {s.steps_per_execution}")
    if s.swa_epochs:
        if not isinstance(s.swa_epochs, int) or not 0 < s.swa_epochs < (1 - s.warmup_fraction) * s.epochs:
            raise UserError(f"swa epochs must be a whole number of epochs after the warm-up, under "
                            f"{(1 - s.warmup_fraction) * s.epochs:g} here, received {s.swa_epochs!r}")
        if s.schedule not in CONTINUOUS_SCHEDULES or model_name == "vgg16_pretrained" or s.distribute != "none":
            raise UserError(f"--swa-epochs needs vgg16 or alexnet on one device with --schedule "
                            f"{' or '.join(CONTINUOUS_SCHEDULES)}, not {model_name} with {s.schedule}")
        if s.ema_momentum:
            raise UserError("--swa-epochs and --ema-momentum each average the weights; choose one")
        if not s.min_lr:
            raise UserError("--swa-epochs averages weights trained at --min-lr, which is 0 here: they would "
                            "not move; give --min-lr a moderate rate (e.g. a tenth of --learning-rate)")
    if s.init != "keras" and model_name == "vgg16_pretrained":
        raise UserError(f"--init {s.init} applies to the models trained from scratch (vgg16, alexnet), "
                        "not vgg16_pretrained")
    if s.schedule in CONTINUOUS_SCHEDULES and s.min_lr > s.learning_rate:
        raise UserError(f"min lr {s.min_lr!r} is above the learning rate {s.learning_rate!r}; the {s.schedule} "
                        "schedule decays from the learning rate down to min lr")
    if s.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package (python -m pip install tensorboard)")
    if model_name != "vgg16_pretrained":
        for name in PRETRAINED_ONLY:
            if name == "weights":  # resolve_settings clears it for these models (saved runs hold None)
                continue
            if getattr(s, name) != Settings.__dataclass_fields__[name].default:
                raise UserError(f"--{name.replace('_', '-')} {getattr(s, name)} (recipe {s.recipe}) applies to "
                                f"vgg16_pretrained only, not {model_name}")
    for name, value, low in (("image size", s.image_size, 32), ("fine-tune epochs", s.fine_tune_epochs, 0)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"{name} must be an integer >= {low}, received {value!r}")
    blocks = fine_tune_blocks(s)
    unknown = [block for block in blocks if block not in models.VGG16_BASE_BLOCKS]
    if unknown or not blocks:
        raise UserError(f"--fine-tune-blocks: unknown block '{unknown[0] if unknown else ''}'; choose from "
                        f"{', '.join(models.VGG16_BASE_BLOCKS)}, comma-separated")
    if not (math.isfinite(s.fine_tune_learning_rate) and s.fine_tune_learning_rate > 0):
        raise UserError(f"fine-tune learning rate must be > 0, received {s.fine_tune_learning_rate!r}")
    if s.preprocessing == "imagenet" and s.augmentation in ("idg", "fast"):
        # The report's channel shift (0.1) and brightness assume standardized values; on
        # 0-255 pixels the shift would be a tenth of a grey level.
        raise UserError(f"--augmentation {s.augmentation} (the report's ImageDataGenerator) expects standardized "
                        "images; with --preprocessing imagenet use crop or none")
    if s.cache_features and s.augment_validation:
        raise UserError("--cache-features computes the validation features once, from clean images; "
                        "it cannot be combined with --augment-validation")
    if s.cache_features and s.distribute != "none":
        raise UserError(f"--cache-features trains on one device; it is not supported with --distribute "
                        f"{s.distribute} (use --no-cache-features)")
    if not (math.isfinite(s.validation_split) and 0 <= s.validation_split <= 0.5):
        raise UserError(f"validation split must lie in [0, 0.5] (the share of the 50,000 training images held "
                        f"out), received {s.validation_split!r}")
    if not s.validation_split and s.schedule not in CONTINUOUS_SCHEDULES:
        raise UserError(f"--validation-split 0 leaves no validation images for --schedule {s.schedule}, which "
                        f"watches val_loss; use --schedule {' or '.join(CONTINUOUS_SCHEDULES)}")
    if not s.validation_split and s.augment_validation:
        raise UserError("--validation-split 0 leaves no validation images to augment (--augment-validation)")
    if s.augment_validation and s.augmentation == "none":
        raise UserError("--augment-validation needs an augmentation (idg or fast), not --augmentation none")


def pipeline_options(settings):
    """augment.make_dataset's augmentation arguments for the training images of a crop or fast run."""
    return {"cutout": settings.cutout, "crop_padding": settings.crop_padding,
            "policy": None if settings.policy == "none" else settings.policy, "erasing": settings.erasing,
            "mixing": None if settings.mixing == "none" else settings.mixing, "mixing_alpha": settings.mixing_alpha}


def fine_tune_blocks(settings):
    """The block names of --fine-tune-blocks, as a list."""
    return [block.strip() for block in str(settings.fine_tune_blocks).split(",") if block.strip()]


def resolve_settings(model_name, settings):
    """Fill what the defaults leave open, so config.json says what the run does.

    A random seed (then saved); precision auto resolved to mixed or float32 for this
    machine; no weights for scratch models; no Cutout where the augmentation does not
    apply it (a recipe's cutout with --augmentation idg or none), the default crop padding
    where there is no crop.
    """
    changes = {}
    if settings.augmentation not in CUTOUT_AUGMENTATIONS:
        changes.update(cutout=0, policy="none", erasing=0.0, mixing="none", refine_epochs=0)
    if settings.augmentation != "crop":
        changes["crop_padding"] = Settings.crop_padding
    if settings.seed is None:
        changes["seed"] = int.from_bytes(os.urandom(4), "little") % 2**31
    if settings.precision == "auto":
        # Native bfloat16 only on CPU-only machines: on a GPU mixed means float16, untested here.
        native = rundir.cpu_description()[1] and not tf.config.list_physical_devices("GPU")
        changes["precision"] = "mixed" if native else "float32"
    if model_name != "vgg16_pretrained":
        changes["weights"] = None
    return dataclasses.replace(settings, **changes)


def saved_settings(saved):
    """The Settings of a config.json's "settings": a setting it predates at its default, one since removed left out."""
    known = {field.name for field in dataclasses.fields(Settings)}
    return Settings(**{key: value for key, value in saved.items() if key in known})


def load_settings(run_dir):
    """The resolved Settings saved in a run folder's config.json (for --resume)."""
    config = rundir.read_json(os.path.join(run_dir, rundir.CONFIG_FILE), "the run's settings")
    return saved_settings(config.get("settings", {}))



# --- What a run trains with --------------------------------------------------------

def make_optimizer(settings, steps_per_epoch):
    """The optimizer with its learning-rate schedule, from the settings alone.

    plateau: a constant learning rate that ReduceLROnPlateau may cut. cosine: Keras'
    CosineDecay, stepped every batch: linear warm-up from 0 over warmup_fraction of the
    run's steps (sized from epochs and steps_per_epoch), then a cosine down to min_lr at
    the last step. linear: the same warm-up, then a straight line down to min_lr
    (models.OneCycle). With swa_epochs, either reaches min_lr that many epochs before the
    end and holds it. The schedule reads the optimizer's step counter, which the checkpoint
    saves, so a resumed run continues the same curve.
    """
    learning_rate = settings.learning_rate
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = int(round(settings.warmup_fraction * total_steps))
    decay_end = total_steps - settings.swa_epochs * steps_per_epoch  # both schedules hold min_lr after it
    if settings.schedule == "linear":
        learning_rate = models.OneCycle(settings.learning_rate, warmup_steps, decay_end, settings.min_lr)
    elif settings.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else settings.learning_rate,
            decay_steps=max(decay_end - warmup_steps, 1),
            alpha=settings.min_lr / settings.learning_rate,
            warmup_target=settings.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps)
    decay = settings.weight_decay or None
    options = {"weight_decay": decay}
    if settings.optimizer == "sgd":
        options.update(momentum=settings.momentum, nesterov=True)
    if settings.classifier_lr_scale != 1:
        optimizer = models.CLASSIFIER_SCALED_OPTIMIZERS[settings.optimizer](
            learning_rate, classifier_lr_scale=settings.classifier_lr_scale, **options)
    elif settings.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, **options)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, **options)
    if decay:
        # Decay the kernels only: BatchNorm's scale and shift and the biases set offsets and
        # gains, which shrinking toward zero does not regularize (the usual exemption).
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_model(model, settings, steps_per_epoch):
    """Compile `model` with the settings' optimizer, schedule and loss: the one place they are built."""
    model.compile(optimizer=make_optimizer(settings, steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
                  metrics=["accuracy"], steps_per_execution=settings.steps_per_execution)


def make_callbacks(settings):
    """The schedule's watchers, in the order RunFolderCheckpoint expects: {} for cosine and linear."""
    if settings.schedule != "plateau":
        return {}
    return {"reduce_lr": keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=settings.lr_factor, patience=settings.lr_patience,
                min_lr=settings.min_lr, min_delta=settings.lr_min_delta, verbose=1),
            "early_stopping": keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=settings.stop_patience, min_delta=settings.stop_min_delta,
                restore_best_weights=True, verbose=1)}


def fine_tune_settings(settings):
    """The settings of the fine-tuning phase: a constant fine_tune_learning_rate, the rest unchanged.

    schedule "plateau" is what gives make_optimizer a constant rate; phase 2 gets no
    ReduceLROnPlateau or EarlyStopping (see _fine_tune).
    """
    return dataclasses.replace(settings, learning_rate=settings.fine_tune_learning_rate, schedule="plateau")
