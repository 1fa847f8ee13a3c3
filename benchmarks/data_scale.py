"""Real-size folders: listing, first batch, views/s and peak memory; streamed evaluation.

Writes N synthetic 256×256 JPEGs (smooth colour gradients plus noise, 100 class folders)
under --root (kept for reruns), then, each measurement in its own process so that its peak
RSS is its own, prints JSON lines:
  - "pipeline", per N: seconds to `data.num_classes(folder)`, seconds from a folder path to
    the first pretraining batch (`pretrain_dataset`, views of --image-size, batch --batch),
    views/s over the next --batches batches (source images turned into two views per
    second) and the process's peak RSS;
  - "evaluation": `evaluation.knn_eval` with a small conv encoder on the largest folder as
    the training split and the smallest as the test split (--eval-size px): seconds and
    peak RSS, beside the bytes the training split's images would take held in memory.
  - "tfds", with --tfds N: the N-image folder written as a tensorflow-datasets data set
    (16 TFRecord files under ROOT/tfds), then seconds to the first pretraining batch,
    views/s and peak RSS, read deterministically (seed=0) and in any order (seed=None).
--code points at another checkout of keras_byol (e.g. `git worktree add /tmp/before REV`)
to measure it on the same folders; the "evaluation" line of a checkout that holds the
split in memory needs a split that fits: give --eval-sizes for it.

    python benchmarks/data_scale.py --sizes 10000,100000 --root /tmp/byol_data_scale
"""

import argparse
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 100


def _write_images(job):
    """Writes the JPEGs of one class folder (a worker of the pool)."""
    import numpy as np
    from PIL import Image

    folder, first, count = job
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(first)
    ramp = np.linspace(0, 1, 256, dtype=np.float32)
    for i in range(first, first + count):
        path = os.path.join(folder, f"{i:07d}.jpg")
        if os.path.exists(path):
            continue
        colour = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        image = ramp[:, None, None] * colour[0] + ramp[None, :, None] * colour[1]
        image = (image / 2 + rng.normal(0, 8, (256, 256, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(path, quality=90)


def write_folder(root, count):
    """ROOT/COUNT with `count` JPEGs in CLASSES class folders (written once)."""
    folder = os.path.join(root, str(count))
    per_class = count // CLASSES
    jobs = [
        (os.path.join(folder, f"class_{c:03d}"), c * per_class, per_class) for c in range(CLASSES)
    ]
    started = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_images, jobs)
    return folder, time.perf_counter() - started


def _peak_rss_mib():
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _first_batch_and_views_per_s(args, source, seed):
    """(seconds from the source to the first pretraining batch, views/s over --batches)."""
    from keras_byol import data

    started = time.perf_counter()
    iterator = iter(
        data.pretrain_dataset(
            source, batch_size=args.batch, image_size=args.image_size, seed=seed, repeat=True
        )
    )
    next(iterator)["view1"].numpy()
    first_batch = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)["view1"].numpy()
    return first_batch, args.batches * args.batch / (time.perf_counter() - started)


def child_pipeline(args):
    from keras_byol import data

    started = time.perf_counter()
    classes = data.num_classes(args.folder)
    to_num_classes = time.perf_counter() - started
    to_first_batch, views_per_s = _first_batch_and_views_per_s(args, args.folder, seed=0)
    return {
        "classes": classes,
        "num_classes_s": round(to_num_classes, 2),
        "first_batch_s": round(to_first_batch, 2),
        "views_per_s": round(views_per_s, 1),
        "peak_rss_mib": _peak_rss_mib(),
    }


def tfds_builder_class():
    """A tfds builder of the JPEGs of a --folder (defined on use: tfds registers it)."""
    import tensorflow_datasets as tfds

    class ByolScaleJpegs(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        folder = None

        def _info(self):
            features = {
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=CLASSES),
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for label, name in enumerate(sorted(os.listdir(self.folder))):
                for file in sorted(os.listdir(os.path.join(self.folder, name))):
                    yield file, {"image": os.path.join(self.folder, name, file), "label": label}

    return ByolScaleJpegs


def write_tfds(root, folder):
    """The folder as tfds data set byol_scale_jpegs in ROOT/tfds/COUNT (written once)."""
    import tensorflow_datasets as tfds

    data_dir = os.path.join(root, "tfds", os.path.basename(folder))
    builder_class = tfds_builder_class()
    builder_class.folder = folder
    builder = builder_class(data_dir=data_dir)
    started = time.perf_counter()
    if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=16))
    return data_dir, time.perf_counter() - started


def child_tfds(args):
    import tensorflow_datasets as tfds

    tfds_builder_class()  # registers the name
    tfds.core.add_data_dir(args.folder)
    result = {}
    for label, seed in (("seed0", 0), ("any_order", None)):
        if (
            seed is None
            and args.code != str(ROOT)
            and "seed=None" not in Path(args.code, "keras_byol", "data.py").read_text()
        ):
            continue  # a checkout without non-deterministic reads
        first_batch, views_per_s = _first_batch_and_views_per_s(args, "byol_scale_jpegs", seed)
        result[label] = {
            "first_batch_s": round(first_batch, 2),
            "views_per_s": round(views_per_s, 1),
        }
    return {**result, "peak_rss_mib": _peak_rss_mib()}


def child_evaluation(args):
    import keras

    from keras_byol import evaluation

    keras.utils.set_random_seed(0)  # the same encoder for every checkout
    inputs = keras.Input((args.eval_size, args.eval_size, 3))
    x = keras.layers.Conv2D(32, 8, strides=4, activation="relu")(inputs)
    encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    started = time.perf_counter()
    result = evaluation.knn_eval(
        encoder, args.folder, args.test_folder, image_size=args.eval_size, k=20
    )
    return {
        "train_examples": result["train_examples"],
        "top1": round(result["top1"], 4),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": _peak_rss_mib(),
        "images_in_memory_mib": round(
            result["train_examples"] * args.eval_size**2 * 3 * 4 / 2**20, 1
        ),
    }


def run_child(args, what, **extra):
    flags = [f"--child={what}", f"--code={args.code}"]
    flags += [f"--{name.replace('_', '-')}={value}" for name, value in extra.items()]
    for name in ("image_size", "batch", "batches", "eval_size"):
        flags.append(f"--{name.replace('_', '-')}={getattr(args, name)}")
    env = {**os.environ, "PYTHONPATH": args.code, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, __file__, *flags], capture_output=True, text=True, env=env
    )
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--eval-sizes", default=None, help="N of the evaluation's train split")
    parser.add_argument("--root", default="/tmp/byol_data_scale")
    parser.add_argument("--code", default=str(ROOT))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--eval-size", type=int, default=96)
    parser.add_argument("--tfds", type=int, default=None, help="N of the tfds measurement")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-evaluation", action="store_true")
    parser.add_argument("--child", default=None)
    parser.add_argument("--folder", default=None)
    parser.add_argument("--test-folder", default=None)
    args = parser.parse_args()
    if args.child:
        work = {"pipeline": child_pipeline, "tfds": child_tfds}.get(args.child, child_evaluation)
        print(json.dumps(work(args)))
        return

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tensorflow as tf
    from machine import describe

    machine = describe(tensorflow=tf.__version__)
    sizes = [int(n) for n in args.sizes.split(",")]
    folders = {}
    for count in sorted(set(sizes + [int(n) for n in (args.eval_sizes or "").split(",") if n])):
        folders[count], seconds = write_folder(args.root, count)
        print(json.dumps({"folder": folders[count], "images": count, "write_s": round(seconds, 1)}))
    code = "this checkout" if args.code == str(ROOT) else args.code
    if args.tfds:
        data_dir, seconds = write_tfds(args.root, write_folder(args.root, args.tfds)[0])
        print(json.dumps({"tfds": data_dir, "images": args.tfds, "write_s": round(seconds, 1)}))
        line = {"measure": "tfds", "images": args.tfds, "files": 16, "code": code}
        line.update(image_size=args.image_size, batch=args.batch)
        line.update(run_child(args, "tfds", folder=data_dir))
        print(json.dumps({**line, "machine": machine}))
    if not args.skip_pipeline:
        for count in sizes:
            result = run_child(args, "pipeline", folder=folders[count])
            line = {"measure": "pipeline", "images": count, "code": code}
            line.update(image_size=args.image_size, batch=args.batch, **result)
            print(json.dumps({**line, "machine": machine}))
    if not args.skip_evaluation:
        eval_sizes = [int(n) for n in (args.eval_sizes or str(max(sizes))).split(",")]
        for count in eval_sizes:
            result = run_child(
                args, "evaluation", folder=folders[count], test_folder=folders[min(folders)]
            )
            line = {"measure": "evaluation", "images": count, "code": code}
            print(json.dumps({**line, "eval_size": args.eval_size, **result, "machine": machine}))


if __name__ == "__main__":
    main()
