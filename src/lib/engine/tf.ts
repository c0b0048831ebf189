// The one TensorFlow.js import of the project, so that which packages provide it is decided in one
// place: core, layers, the converter's graph models and the pure-JS cpu backend, not the whole
// @tensorflow/tfjs bundle (WebGL, tfjs-data, browser builds). backend.ts adds wasm and, when the
// user installed it, native TensorFlow.
/* eslint-disable no-restricted-imports -- the one place that may */
import type {} from '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops.js'
export * from '@tensorflow/tfjs-core'
export * from '@tensorflow/tfjs-layers'
export {GraphModel, loadGraphModel, loadGraphModelSync} from '@tensorflow/tfjs-converter'
import '@tensorflow/tfjs-backend-cpu'
// Core's gradients and chained tensor methods (t.argMax()), which its Node entry does not register:
// built from @tensorflow/tfjs-core by scripts/bundle-tfjs.ts (`npm run build`), onto this same core.
import './tfjs-registrations.cjs'
