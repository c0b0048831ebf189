// The s3 source: images in Amazon S3 (or an S3-compatible store) under an s3:// prefix, one sub-prefix
// per class (or one fixed label). It is the gcs source over the other object store: the listing,
// ordering and bounded parallel downloads all go through the one storage layer.
import type {S3SourceConfig} from '../../config/schema.js'
import {countGcsSource, openGcsSource} from './gcs.js'
import type {SourceContext, SourceItem} from './types.js'

export function openS3Source(source: S3SourceConfig, ctx: SourceContext): AsyncGenerator<SourceItem> {
  return openGcsSource(source, ctx)
}

export function countS3Source(source: S3SourceConfig, ctx: SourceContext): Promise<number | undefined> {
  return countGcsSource(source, ctx)
}
