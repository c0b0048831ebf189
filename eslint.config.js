// ESLint (flat config) with typescript-eslint's recommended rules, run by `npm run lint` (and so by
// `npm test`). Syntax-only rules: type-aware linting would double the time of a test run on a small
// machine, and `tsc --strict` already checks types.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  // The wasm module is generated (base64), not written.
  {ignores: ['dist/**', 'node_modules/**', 'src/lib/data/scanline-adler32-wasm.ts']},
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // A leading underscore marks a value taken only to be ignored (a rest split, a loop count).
      '@typescript-eslint/no-unused-vars': [
        'error',
        {argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', caughtErrors: 'none'},
      ],
      // Terminal output is matched and stripped with ANSI escapes (\x1b) on purpose.
      'no-control-regex': 'off',
      // A timer declared before the closure that clears it is read before it is assigned.
      'prefer-const': ['error', {ignoreReadBeforeAssign: true}],
      // TensorFlow.js comes in through src/lib/engine/tf.ts only, the one place that decides which
      // packages provide it.
      'no-restricted-imports': [
        'error',
        {paths: ['@tensorflow/tfjs', '@tensorflow/tfjs-core', '@tensorflow/tfjs-layers', '@tensorflow/tfjs-converter'].map((name) =>
          ({name, message: "Import TensorFlow.js from src/lib/engine/tf.ts, the one place that decides which packages provide it."}))},
      ],
    },
  },
  {
    // Only the engine branches on the backend (ARCHITECTURE.md): it chooses one, once, and says what
    // it chose. What a rule can see of a branch elsewhere: asking TensorFlow.js for the backend,
    // comparing something's `backend` with a backend name, naming a backend package.
    files: ['src/**/*.ts'],
    ignores: ['src/lib/engine/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "CallExpression[callee.property.name=/^(getBackend|setBackend|findBackend)$/]",
          message: 'Only src/lib/engine/ may query or switch the TensorFlow.js backend; ask the engine instead.',
        },
        {
          selector:
            "BinaryExpression[operator=/^[!=]==?$/]:has(MemberExpression[property.name='backend']):has(Literal[value=/^(wasm|cpu|webgl|tensorflow|tensorflow-gpu)$/])",
          message: 'Only src/lib/engine/ branches on the backend; add a question for the engine to answer there.',
        },
        {
          selector: 'Literal[value=/^@tensorflow\\/tfjs-(node|node-gpu|backend-[a-z]+)$/]',
          message: 'Only src/lib/engine/ loads or looks for a backend package.',
        },
      ],
    },
  },
  {
    // Tests poke at JSON answers and private fields; an `any` there is a test's business.
    files: ['test/**/*.ts'],
    rules: {'@typescript-eslint/no-explicit-any': 'off'},
  },
)
