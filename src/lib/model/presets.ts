// Built-in model architectures, expressed as the same layer lists a user can write in ml.yaml
// (model.layers), so presets and custom models go through one builder.
import type {LayerConfig, ModelConfig} from '../config/schema.js'

export type PresetName = NonNullable<ModelConfig['preset']>

export const PRESET_DESCRIPTIONS: Record<PresetName, string> = {
  mlp: 'flatten, dense 128 relu, dropout, dense softmax',
  'cnn-tiny': 'two small convolutions (8 and 16 filters) with max-pooling: fast on any backend',
  'cnn-small': 'the Keras "simple MNIST convnet": conv 32, pool, conv 64, pool, dropout 0.5, dense softmax',
  // Batch-norm momentum 0.9 rather than Keras' 0.99: moving statistics must settle within the few
  // hundred steps of a short run, or inference sees the initial statistics.
  cnn: 'deeper: two conv blocks of two 3x3 convolutions with batch norm, global average pooling, dense',
  // At 224x224 a stride-1 stem keeps 50k activations per channel through the first blocks: the
  // strided stem and strided blocks cut that 4x per block, so photo-size batches fit and train fast.
  'cnn-photo': 'for photo-size inputs: a strided 3x3 stem and four strided conv blocks with batch norm, global average pooling, dropout',
}

/** The hidden layers of a preset; the builder adds the input shape and the softmax classifier. */
export function presetLayers(preset: PresetName, dropout?: number): LayerConfig[] {
  switch (preset) {
    case 'mlp':
      return [
        {type: 'flatten'},
        {type: 'dense', units: 128, activation: 'relu'},
        {type: 'dropout', rate: dropout ?? 0.2},
      ]
    case 'cnn-tiny':
      return [
        {type: 'conv2d', filters: 8, kernelSize: 3, activation: 'relu'},
        {type: 'maxPooling2d', poolSize: 2},
        {type: 'conv2d', filters: 16, kernelSize: 3, activation: 'relu'},
        {type: 'maxPooling2d', poolSize: 2},
        {type: 'flatten'},
        {type: 'dropout', rate: dropout ?? 0.25},
      ]
    case 'cnn-small':
      return [
        {type: 'conv2d', filters: 32, kernelSize: 3, activation: 'relu'},
        {type: 'maxPooling2d', poolSize: 2},
        {type: 'conv2d', filters: 64, kernelSize: 3, activation: 'relu'},
        {type: 'maxPooling2d', poolSize: 2},
        {type: 'flatten'},
        {type: 'dropout', rate: dropout ?? 0.5},
      ]
    case 'cnn':
      return [
        {type: 'conv2d', filters: 32, kernelSize: 3, padding: 'same', useBias: false},
        {type: 'batchNormalization', momentum: 0.9},
        {type: 'activation', activation: 'relu'},
        {type: 'conv2d', filters: 32, kernelSize: 3, padding: 'same', useBias: false},
        {type: 'batchNormalization', momentum: 0.9},
        {type: 'activation', activation: 'relu'},
        {type: 'maxPooling2d', poolSize: 2},
        {type: 'conv2d', filters: 64, kernelSize: 3, padding: 'same', useBias: false},
        {type: 'batchNormalization', momentum: 0.9},
        {type: 'activation', activation: 'relu'},
        {type: 'conv2d', filters: 64, kernelSize: 3, padding: 'same', useBias: false},
        {type: 'batchNormalization', momentum: 0.9},
        {type: 'activation', activation: 'relu'},
        {type: 'maxPooling2d', poolSize: 2},
        {type: 'globalAveragePooling2d'},
        {type: 'dense', units: 128, activation: 'relu'},
        {type: 'dropout', rate: dropout ?? 0.3},
      ]
    case 'cnn-photo':
      return [
        ...[16, 32, 64, 96, 128].flatMap((filters) => [
          {type: 'conv2d', filters, kernelSize: 3, strides: 2, padding: 'same', useBias: false},
          {type: 'batchNormalization', momentum: 0.9},
          {type: 'activation', activation: 'relu'},
        ]),
        {type: 'globalAveragePooling2d'},
        {type: 'dropout', rate: dropout ?? 0.3},
      ]
  }
}
