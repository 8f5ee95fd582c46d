// Hand-made traces for the algorithm tests: spans as [id, parent, start, end, service, name],
// linked into a tree by the page's own model code.
import { link } from '../../../crates/server/ui/js/model.js';

/** @param {[string, string, number, number, string?, string?][]} rows */
export function trace(rows) {
  const spans = rows.map(([id, parentId, start, end, service = 'svc', name = id]) => ({
    id, parentId, traceId: 't', name, service, kind: 'internal', status: 'unset', statusMessage: '',
    start, end, duration: end - start, startUnixNano: BigInt(start), attributes: [], resource: [],
    scope: { name: '', version: '', attributes: [] }, events: [], links: [], children: [], parent: null, depth: 0, orphan: false,
  }));
  return link(spans);
}
