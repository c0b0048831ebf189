// The one text-table helper of runs, models, tune and evaluate: widths, right-aligned numbers, "-" for missing cells.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {textTable} from '../../../src/lib/ui/table.js'

describe('textTable', () => {
  it('pads columns to their widest cell, right-aligns numeric columns, prints missing cells as "-" and trims trailing blanks', () => {
    const table = textTable(['class', 'recall', 'n'], [['cat', '0.5000', 12], ['elephant', undefined, 3]], {align: [undefined, 'right', 'right']})
    assert.equal(table, ['class     recall   n', '--------  ------  --', 'cat       0.5000  12', 'elephant       -   3'].join('\n'))
  })
})
