// The layer rules of the house plan (ARCHITECTURE.md), checked by `npm run lint:deps` (part of
// `npm test`). Each rule says which way imports may point; type-only imports count too, since a
// type shared the wrong way is a concept in the wrong place.
//
// KNOWN_EXCEPTIONS are imports that break a rule today and are being moved; each is named by the
// exact edge (file -> file) and the reason, so that the check is green now and any new violation
// still fails. Delete an entry once the import is gone (the check says nothing about stale entries,
// so grep for the file when a move lands).

/** @type {Record<string, Array<{from: string, to: string, why: string}>>} */
const KNOWN_EXCEPTIONS = {
  'models-through-model': [
    {
      from: '^src/lib/export/index\\.ts$',
      to: '^src/lib/train/evaluate\\.ts$',
      why: 'predictSplit (inference over a dataset split, for the model card) still lives with evaluation in train/',
    },
    {
      from: '^src/lib/monitor/report\\.ts$',
      to: '^src/lib/train/evaluate(-run)?\\.ts$',
      why: 'predictSplit and the EvaluateResult type still live in train/; the evaluate report is to move to report/',
    },
    {
      from: '^src/lib/export/vertex\\.ts$',
      to: '^src/lib/train/vertex\\.ts$',
      why: 'the Vertex AI project/region settings are shared with remote training and still live in train/vertex.ts',
    },
    {
      from: '^src/lib/export/sagemaker\\.ts$',
      to: '^src/lib/train/sagemaker\\.ts$',
      why: 'the SageMaker role, region and image settings are shared with remote training and still live in train/sagemaker.ts',
    },
  ],
  'base-layers-alone': [
    {
      from: '^src/lib/storage/s3\\.ts$',
      to: '^src/lib/cloud/aws\\.ts$',
      why: 'the AWS client settings (endpoints, region, retries, credentials errors) shared by s3, kinesis and sagemaker; it imports only errors',
    },
  ],
  'serve-not-monitor': [
    {
      from: '^src/lib/serve/metrics\\.ts$',
      to: '^src/lib/monitor/input-stats\\.ts$',
      why: 'image-size and brightness statistics are moving out of monitor/ with the serve restructuring (issue 20)',
    },
  ],
}

/**
 * A forbidden rule, plus its known exceptions: the rule itself skips the files an exception starts
 * from, and each such file gets a copy of the rule that skips only the excepted target.
 */
function withExceptions(rule) {
  const exceptions = KNOWN_EXCEPTIONS[rule.name] ?? []
  if (exceptions.length === 0) return [rule]
  const fromNot = [].concat(rule.from.pathNot ?? [], exceptions.map((e) => e.from))
  const rules = [{...rule, from: {...rule.from, pathNot: fromNot}}]
  for (const [i, e] of exceptions.entries()) {
    rules.push({
      ...rule,
      name: `${rule.name}~${i}`,
      comment: `${rule.comment} (known exception: ${e.to} only, because ${e.why})`,
      from: {path: e.from},
      to: {...rule.to, pathNot: [].concat(rule.to.pathNot ?? [], e.to)},
    })
  }
  return rules
}

const rules = [
  {
    name: 'lib-not-commands',
    comment: 'commands are the thin outer layer: lib never imports them',
    severity: 'error',
    from: {path: '^src/lib/'},
    to: {path: '^src/commands/'},
  },
  {
    name: 'models-through-model',
    comment: 'serve, export, predict and monitor read models through model/, never through train/',
    severity: 'error',
    from: {path: ['^src/lib/(serve|export|monitor)/', '^src/commands/(predict|serve|export|monitor)(\\.ts$|/)']},
    to: {path: '^src/lib/train/'},
  },
  {
    name: 'serve-not-monitor',
    comment: 'serve never imports monitor: names they share live in a small metrics-names module both use',
    severity: 'error',
    from: {path: '^src/lib/serve/'},
    to: {path: '^src/lib/monitor/', pathNot: '^src/lib/monitor/names\\.ts$'},
  },
  {
    name: 'base-layers-alone',
    comment: 'storage, errors and optional (optional packages, loaded on first use) are the base: they import no domain module (errors imports nothing of ours)',
    severity: 'error',
    from: {path: ['^src/lib/storage/', '^src/lib/errors\\.ts$', '^src/lib/optional\\.ts$']},
    to: {path: '^src/', pathNot: ['^src/lib/storage/', '^src/lib/errors\\.ts$', '^src/lib/optional\\.ts$']},
  },
  {
    name: 'backend-in-engine',
    comment: 'only engine/ chooses or loads a TensorFlow.js backend; everything else imports engine/tf.ts',
    severity: 'error',
    from: {path: '^src/', pathNot: '^src/lib/engine/'},
    to: {path: '@tensorflow/tfjs-(node|node-gpu|backend-[a-z]+)(/|$)'},
  },
  {
    name: 'no-circular',
    comment: 'import circles make load order matter and hide which module owns a concept',
    severity: 'error',
    from: {path: '^(src|bench|scripts)/'},
    to: {circular: true},
  },
]

module.exports = {
  forbidden: rules.flatMap(withExceptions),
  options: {
    doNotFollow: {path: 'node_modules'},
    exclude: {path: '^(dist|node_modules)/'},
    tsPreCompilationDeps: true,
    tsConfig: {fileName: 'tsconfig.json'},
    moduleSystems: ['es6'],
  },
}
