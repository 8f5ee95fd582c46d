// @ts-check
// The critical path: the chain of work that decided when the trace ended. Pure; see docs/ui.md.
//
// Walk back from a span's end. At each step the child that ended last, at or before the cursor,
// is on the path for its own interval, and the cursor moves to that child's start; time between
// the chosen children is the span's own. Children are clamped to the parent's interval first:
// clock skew (a child starting before its parent) cannot move the path outside the parent, and
// an async child that ends after its parent counts only up to the parent's end. Spans whose
// parent is missing are roots of their own walk.

/**
 * @typedef {{ id: string, start: number, end: number, children: Node[] }} Node
 * @typedef {{ id: string, start: number, end: number }} Segment
 * @typedef {{ ids: Set<string>, segments: Segment[] }} CriticalPath
 */

/**
 * @param {Node[]} roots
 * @returns {CriticalPath}
 */
export function criticalPath(roots) {
  /** @type {Set<string>} */
  const ids = new Set();
  /** @type {Segment[]} */
  const segments = [];
  for (const root of roots) {
    // Iterative, so a 10K-deep chain cannot overflow the stack.
    /** @type {{ node: Node, start: number, end: number }[]} */
    const work = [{ node: root, start: root.start, end: Math.max(root.start, root.end) }];
    while (work.length) {
      const { node, start, end } = /** @type {{ node: Node, start: number, end: number }} */ (work.pop());
      ids.add(node.id);
      const kids = [];
      for (const c of node.children) {
        const s = Math.max(c.start, start);
        const e = Math.min(c.end, end);
        // Wholly outside the parent's interval (after clamping): not this parent's work.
        if (e < s || c.start > end || c.end < start) continue;
        kids.push({ node: c, start: s, end: e });
      }
      // Latest end first; among equal ends, the longer child (it explains more of the time).
      kids.sort((a, b) => b.end - a.end || a.start - b.start);
      let cursor = end;
      for (const k of kids) {
        if (k.end > cursor) continue;
        if (k.end < cursor) segments.push({ id: node.id, start: k.end, end: cursor });
        work.push(k);
        cursor = k.start;
        if (cursor <= start) break;
      }
      if (cursor > start) segments.push({ id: node.id, start, end: cursor });
    }
  }
  segments.sort((a, b) => a.start - b.start || a.end - b.end);
  return { ids, segments };
}

/** Time each span spends on the critical path, by span ID. @param {CriticalPath} path */
export function selfTimeOnPath(path) {
  /** @type {Map<string, number>} */
  const out = new Map();
  for (const s of path.segments) out.set(s.id, (out.get(s.id) ?? 0) + (s.end - s.start));
  return out;
}
