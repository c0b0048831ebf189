"""The Keras peer of bench:train: the Keras "simple MNIST convnet" (ml's cnn-small preset) trained with
tensorflow-cpu at batch 128 on an ml dataset store, read from its TFRecord shards through tf.data.

Prints one JSON object: steadyImagesPerSec (median epoch after the first, as bench:train counts
ml's epochs) and runImagesPerSec (images of all epochs over the whole run, start-up included:
reading the shards, building and compiling the model).
"""
import argparse
import json
import os
import statistics
import sys
import time

started = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


class EpochTimes(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.begin)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    with open(os.path.join(args.store, "manifest.json")) as f:
        manifest = json.load(f)
    files = [os.path.join(args.store, s["file"]) for s in manifest["shards"] if s["split"] == "train"]
    count = sum(s["count"] for s in manifest["shards"] if s["split"] == "train")
    height, width, channels = (manifest["image"][k] for k in ("height", "width", "channels"))
    classes = len(manifest["classes"])

    def parse(record):
        example = tf.io.parse_single_example(record, FEATURES)
        image = tf.io.decode_png(example["image/encoded"], channels=channels)
        return tf.cast(image, tf.float32) / 255.0, example["image/class/label"]

    # Decoded once and kept, as ml's trainer keeps the decoded split in memory; shuffled every epoch.
    data = (tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE).cache()
            .shuffle(count, seed=42).batch(args.batch).prefetch(tf.data.AUTOTUNE))
    tf.keras.utils.set_random_seed(42)
    model = tf.keras.Sequential([
        tf.keras.Input((height, width, channels)),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(2),
        tf.keras.layers.Conv2D(64, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dropout(0.5),
        tf.keras.layers.Dense(classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = EpochTimes()
    history = model.fit(data, epochs=args.epochs, verbose=0, callbacks=[times])
    total = time.perf_counter() - started
    steady = times.seconds[1:] or times.seconds
    json.dump({
        "tensorflow": tf.__version__,
        "images": count,
        "epochSeconds": times.seconds,
        "steadyImagesPerSec": count / statistics.median(steady),
        "runImagesPerSec": count * args.epochs / total,
        "loss": float(history.history["loss"][-1]),
        "threads": {"intraOp": tf.config.threading.get_intra_op_parallelism_threads(), "interOp": tf.config.threading.get_inter_op_parallelism_threads()},
    }, sys.stdout)


if __name__ == "__main__":
    main()
