// Commented starter configs written by `ml init`. Every key shown is documented in the schema
// (`ml config schema`); values are the defaults unless the comment says otherwise.

export const TEMPLATES = {
  folder: `# ml.yaml: one config for the whole life of an image classifier.
# Validate it with \`ml config validate\`; list every key with \`ml config schema\`.
name: my-classifier

data:
  sources:
    # One sub-folder per class: images/cat/*.jpg, images/dog/*.jpg, ...
    - type: folder
      path: ./images
  # Small images and the cnn-small preset train in minutes on a laptop's CPU; raise the size (and
  # switch to the cnn preset) once the data is right and a faster backend is installed.
  image:
    width: 32          # every image is resized to width x height
    height: 32
    channels: 3        # 1 = greyscale, 3 = RGB
    fit: contain       # fill (stretch) | contain (letterbox) | cover (centre crop)
  split:               # decided by content hash: stable when images are added
    validation: 0.1
    test: 0.1
    seed: 0
  store: .ml/dataset   # versioned TFRecord shards + manifest.json

model:
  preset: cnn-small    # mlp | cnn-tiny | cnn-small | cnn, or an explicit list:
  # layers:
  #   - {type: conv2d, filters: 32, kernelSize: 3, activation: relu}
  #   - {type: maxPooling2d, poolSize: 2}
  #   - {type: flatten}
  #   - {type: dense, units: 64, activation: relu}

train:
  epochs: 10
  batchSize: 64
  optimizer: adam      # adam | sgd | momentum | rmsprop | adagrad
  learningRate: 0.001
  backend: auto        # auto | tensorflow | wasm | cpu
  seed: 42
  augment:
    shift: 4           # random translation in pixels
    flipHorizontal: true
  earlyStopping:
    patience: 3
  runs: .ml/runs

export:
  dir: .ml/models      # model repository: <dir>/<name>/<version>/
  formats: [tfjs, onnx]

serve:
  port: 8080
`,
  mnist: `# ml.yaml for handwritten digits (MNIST): 28x28 greyscale, ten classes.
# \`ml init --template mnist --with-data\` also writes sample digits to ./data/mnist.
name: mnist

data:
  sources:
    - type: folder
      path: ./data/mnist/train     # one sub-folder per digit: 0/ .. 9/
    - type: folder
      path: ./data/mnist/test
      split: test                  # the official test set stays the test split
  image:
    width: 28
    height: 28
    channels: 1
  split:
    validation: 0.05
    test: 0
    seed: 0
  store: .ml/dataset

model:
  preset: cnn-small                # the Keras "simple MNIST convnet"

# The quickstart's settings: test accuracy 0.97 or better on the 12,000 digits of --with-data.
train:
  epochs: 6
  batchSize: 64
  optimizer: adam
  learningRate: 0.002
  backend: auto
  seed: 42
  runs: .ml/runs

export:
  dir: .ml/models
  formats: [tfjs, onnx]

serve:
  port: 8080
`,
  photos: `# ml.yaml for photos: transfer learning from a pretrained MobileNet (224x224 RGB).
# The base is downloaded once into ~/.cache/ml (or $ML_CACHE_DIR) and checked against its pin.
name: photos

data:
  sources:
    # One sub-folder per class: photos/cat/*.jpg, photos/dog/*.jpg, ...
    - type: folder
      path: ./photos
  image:
    width: 224         # what the base expects (checked)
    height: 224
    channels: 3
    fit: cover
  split:
    validation: 0.1
    test: 0.1
    seed: 0
  store: .ml/dataset

model:
  base:
    # A TensorFlow.js layers model (fine-tunable) or graph model (frozen): a folder, gs:// or https://.
    # In the ml repository, \`npm run base:mobilenet\` writes MobileNetV2 to .cache/bases/mobilenet-v2.
    source: https://storage.googleapis.com/tfjs-models/tfjs/mobilenet_v1_0.25_224/model.json
    # sha256: <64 hex digits>   # pin: a download that differs is refused
    output: auto       # the last pooled layer; or a layer name (spatial outputs are average-pooled)
    trainable: false   # frozen: features are computed once and cached, only the head trains
    inputRange: [-1, 1]  # this MobileNetV1 takes [-1,1]; MobileNetV2 from nsfwjs takes [0,1]
  head:
    hidden: []         # e.g. [128] for a hidden dense layer
    dropout: 0.2

train:
  epochs: 10
  batchSize: 32
  learningRate: 0.003
  backend: auto
  seed: 42
  # fineTune:          # second phase: unfreeze the top of the base at a lower rate
  #   epochs: 3
  #   learningRate: 0.0001
  #   unfreeze: 10
  # augment:           # turns the feature cache off: the base then runs every step
  #   crop: 0.5
  #   flipHorizontal: true
  #   brightness: 0.2
  #   contrast: 0.2
  runs: .ml/runs

export:
  dir: .ml/models
  formats: [tfjs, onnx]

serve:
  port: 8080
`,
} as const

export type TemplateName = keyof typeof TEMPLATES
