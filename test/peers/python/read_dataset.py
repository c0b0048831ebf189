"""Reads an ml dataset store with TensorFlow alone: the shards listed in manifest.json through
tf.data.TFRecordDataset, each record through tf.io.parse_single_example and tf.io.decode_png.

Prints one JSON object: per split, each example's key, label and the sha256 of its decoded pixels
(HWC uint8, as ml's loadSplit gives them), in shard order. With --train, a small Keras convnet then
trains one epoch on the train split read the same way, and the JSON gets its loss and image count.
"""
import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/channels": tf.io.FixedLenFeature([], tf.int64),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/text": tf.io.FixedLenFeature([], tf.string),
    "image/key/sha256": tf.io.FixedLenFeature([], tf.string),
}


def shard_files(store, manifest, split):
    return [os.path.join(store, s["file"]) for s in manifest["shards"] if s["split"] == split]


def dataset(store, manifest, split):
    channels = manifest["image"]["channels"]

    def parse(record):
        example = tf.io.parse_single_example(record, FEATURES)
        image = tf.io.decode_png(example["image/encoded"], channels=channels)
        return image, example["image/class/label"], example["image/key/sha256"], example["image/class/text"]

    files = shard_files(store, manifest, split)
    return tf.data.TFRecordDataset(files).map(parse)


def read(store, manifest):
    out = {}
    for split in ("train", "validation", "test"):
        if not shard_files(store, manifest, split):
            continue
        examples = []
        for image, label, key, text in dataset(store, manifest, split):
            pixels = image.numpy()
            examples.append({
                "key": key.numpy().decode(),
                "label": int(label.numpy()),
                "text": text.numpy().decode(),
                "shape": list(pixels.shape),
                "pixels": hashlib.sha256(pixels.tobytes()).hexdigest(),
            })
        out[split] = examples
    return out


def train(store, manifest, batch):
    height, width, channels = (manifest["image"][k] for k in ("height", "width", "channels"))
    classes = len(manifest["classes"])
    data = (dataset(store, manifest, "train")
            .map(lambda image, label, key, text: (tf.cast(image, tf.float32) / 255.0, label))
            .batch(batch))
    tf.keras.utils.set_random_seed(7)
    model = tf.keras.Sequential([
        tf.keras.Input((height, width, channels)),
        tf.keras.layers.Conv2D(8, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seen = sum(int(labels.shape[0]) for _, labels in data)
    history = model.fit(data, epochs=1, verbose=0)
    return {"loss": float(history.history["loss"][0]), "accuracy": float(history.history["accuracy"][0]), "images": seen}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    with open(os.path.join(args.store, "manifest.json")) as f:
        manifest = json.load(f)
    result = {"tensorflow": tf.__version__, "splits": read(args.store, manifest)}
    if args.train:
        result["keras"] = train(args.store, manifest, args.batch)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
