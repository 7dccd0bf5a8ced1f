import sys, dataclasses, math
sys.path.insert(0, "/work/main")
import rundir, keras, numpy as np, tensorflow as tf
import train, models, data, augment
x_tr, y_tr, x_va, y_va = train.load_split("/tmp/cifar10/cifar-10-batches-py", int(sys.argv[1]), 256)
stats = data.compute_stats(x_tr)
epochs = int(sys.argv[2])
for spec in sys.argv[3:]:
    kv = dict(item.split("=") for item in spec.split(",") if item)
    s = train.recipe_settings("fast")
    changes = {}
    for k, v in kv.items():
        f = {f.name: f for f in dataclasses.fields(train.Settings)}[k]
        changes[k] = f.type(v) if f.type is not bool else v == "1"
    s = dataclasses.replace(s, epochs=epochs, seed=0, **changes)
    keras.utils.set_random_seed(0)
    m = models.build_model("vgg16", dropout_scale=s.dropout_scale, bn_momentum=s.bn_momentum)
    train.compile_model(m, s, math.ceil(len(x_tr) / s.batch_size))
    inp = train.make_inputs(s, x_tr, y_tr, x_va, y_va, stats, 0, 0)
    h = m.fit(**inp, epochs=epochs, verbose=0)
    print(spec, "acc", [round(v, 3) for v in h.history["accuracy"]], "loss", [round(v, 2) for v in h.history["loss"]], "val_acc", [round(v, 3) for v in h.history["val_accuracy"]], flush=True)
