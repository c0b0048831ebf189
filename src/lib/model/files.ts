// The files of an exported model version, in a module of their own: the serving instances' worker
// threads name model.onnx without loading the repository's configuration code.
export const MODEL_FILES = {
  modelJson: 'model.json',
  weights: 'weights.bin',
  onnx: 'model.onnx',
  labels: 'labels.json',
  preprocessing: 'preprocessing.json',
  card: 'model-card.json',
  cardMarkdown: 'MODEL_CARD.md',
} as const
