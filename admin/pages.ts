/**
 * What the admin API's list routes share: the error body, and keyset cursors. A cursor is the
 * last row's (timestamp, id) as the server wrote it, opaque to the client: the next page is
 * the rows after it in the route's order, so pages do not shift when rows arrive meanwhile.
 */

export const errorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, message: { type: 'string' } },
  required: ['error', 'message'],
} as const;

export interface Cursor {
  /** ISO 8601 with microseconds, as PostgreSQL's to_json writes a timestamptz. */
  readonly at: string;
  readonly id: string;
}

export const encodeCursor = (c: Cursor): string =>
  Buffer.from(JSON.stringify([c.at, c.id])).toString('base64url');

export function decodeCursor(s: string): Cursor {
  const v = JSON.parse(Buffer.from(s, 'base64url').toString()) as unknown;
  if (
    !Array.isArray(v) ||
    typeof v[0] !== 'string' ||
    typeof v[1] !== 'string' ||
    Number.isNaN(Date.parse(v[0]))
  )
    throw new Error('not a cursor of this API');
  return { at: v[0], id: v[1] };
}
