// The one TensorFlow.js import of the project, so that what the package depends on (the bundle
// today; the core, layers and converter packages alone is the aim) is decided in one place.
// backend.ts adds wasm and, when the user installed it, native TensorFlow.
// eslint-disable-next-line no-restricted-imports -- the one place that may
export * from '@tensorflow/tfjs'
