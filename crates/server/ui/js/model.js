// @ts-check
// A trace as the pages use it: Tempo's `/api/v2/traces/{id}` answer (OTLP JSON, base64 IDs,
// nanosecond strings) flattened into spans with times relative to the trace's first start, and
// a tree. Pure: no DOM, so Node's test runner imports it too.

/**
 * @typedef {{ key: string, value: any }} Attr
 * @typedef {{ time: number, name: string, attributes: Attr[] }} SpanEvent
 * @typedef {{ traceId: string, spanId: string, attributes: Attr[] }} SpanLink
 * @typedef {{
 *   id: string, parentId: string, traceId: string, name: string, service: string,
 *   kind: string, status: string, statusMessage: string,
 *   start: number, end: number, duration: number, startUnixNano: bigint,
 *   attributes: Attr[], resource: Attr[], scope: { name: string, version: string, attributes: Attr[] },
 *   events: SpanEvent[], links: SpanLink[],
 *   children: Span[], parent: Span | null, depth: number, orphan: boolean,
 * }} Span
 * @typedef {{ traceId: string, spans: Span[], roots: Span[], byId: Map<string, Span>,
 *   startUnixNano: bigint, duration: number, services: string[] }} Trace
 */

/** Base64 (standard or URL-safe) or hex IDs, as lowercase hex. */
export function idToHex(id) {
  if (typeof id !== 'string' || id === '') return '';
  if (/^[0-9a-fA-F]+$/.test(id) && (id.length === 32 || id.length === 16)) return id.toLowerCase();
  let bin;
  try {
    bin = atob(id.replace(/-/g, '+').replace(/_/g, '/'));
  } catch {
    return '';
  }
  let out = '';
  for (let i = 0; i < bin.length; i++) out += bin.charCodeAt(i).toString(16).padStart(2, '0');
  return out;
}

/** @param {any} v OTLP AnyValue JSON @returns {any} */
export function anyValue(v) {
  if (!v || typeof v !== 'object') return null;
  if ('stringValue' in v) return v.stringValue;
  if ('boolValue' in v) return v.boolValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return typeof v.doubleValue === 'number' ? v.doubleValue : Number(v.doubleValue);
  if ('arrayValue' in v) return (v.arrayValue.values || []).map(anyValue);
  if ('kvlistValue' in v) {
    /** @type {Record<string, any>} */
    const o = {};
    for (const kv of v.kvlistValue.values || []) o[kv.key] = anyValue(kv.value);
    return o;
  }
  if ('bytesValue' in v) return v.bytesValue;
  return null;
}

/** @param {any[] | undefined} list @returns {Attr[]} */
function attrs(list) {
  return (list || []).map((kv) => ({ key: String(kv.key), value: anyValue(kv.value) }));
}

/** @param {any} v */
function nanos(v) {
  try {
    return BigInt(v ?? 0);
  } catch {
    return 0n;
  }
}

const KIND = /^SPAN_KIND_/;
const STATUS = /^STATUS_CODE_/;

/**
 * Flattens the OTLP JSON of a trace. Spans whose parent is not in the trace become extra roots
 * (`orphan`); a parent chain that loops (bad input) is cut where it loops.
 * @param {any} json `/api/v2/traces/{id}` answer, or its `trace`, or a `resourceSpans` list
 * @returns {Trace}
 */
export function parseTrace(json) {
  const resourceSpans = Array.isArray(json) ? json : json?.trace?.resourceSpans ?? json?.resourceSpans ?? json?.batches ?? [];
  /** @type {Span[]} */
  const spans = [];
  /** @type {bigint[]} */
  const starts = [];
  /** @type {bigint[]} */
  const ends = [];
  for (const rs of resourceSpans) {
    const resource = attrs(rs?.resource?.attributes);
    const service = String(resource.find((a) => a.key === 'service.name')?.value ?? 'unknown');
    for (const ss of rs?.scopeSpans ?? rs?.instrumentationLibrarySpans ?? []) {
      const scope = { name: ss?.scope?.name ?? '', version: ss?.scope?.version ?? '', attributes: attrs(ss?.scope?.attributes) };
      for (const s of ss?.spans ?? []) {
        const st = nanos(s.startTimeUnixNano);
        let en = nanos(s.endTimeUnixNano);
        if (en < st) en = st;
        starts.push(st);
        ends.push(en);
        spans.push({
          id: idToHex(s.spanId),
          parentId: idToHex(s.parentSpanId),
          traceId: idToHex(s.traceId),
          name: String(s.name ?? ''),
          service,
          kind: String(s.kind ?? 'SPAN_KIND_UNSPECIFIED').replace(KIND, '').toLowerCase(),
          status: String(s.status?.code ?? 'STATUS_CODE_UNSET').replace(STATUS, '').toLowerCase(),
          statusMessage: String(s.status?.message ?? ''),
          start: 0,
          end: 0,
          duration: 0,
          startUnixNano: st,
          attributes: attrs(s.attributes),
          resource,
          scope,
          events: (s.events ?? []).map((e) => ({ time: 0, rawTime: nanos(e.timeUnixNano), name: String(e.name ?? ''), attributes: attrs(e.attributes) })),
          links: (s.links ?? []).map((l) => ({ traceId: idToHex(l.traceId), spanId: idToHex(l.spanId), attributes: attrs(l.attributes) })),
          children: [],
          parent: null,
          depth: 0,
          orphan: false,
        });
      }
    }
  }
  let t0 = starts.length ? starts[0] : 0n;
  for (const s of starts) if (s < t0) t0 = s;
  let tEnd = t0;
  spans.forEach((s, i) => {
    s.start = Number(starts[i] - t0);
    s.end = Number(ends[i] - t0);
    s.duration = s.end - s.start;
    if (ends[i] > tEnd) tEnd = ends[i];
    for (const e of s.events) {
      // @ts-ignore rawTime is dropped once converted
      e.time = Number(e.rawTime - t0);
      // @ts-ignore
      delete e.rawTime;
    }
  });
  return link(spans, t0, Number(tEnd - t0));
}

/**
 * Builds the tree of already-parsed spans (also used by tests on hand-made spans).
 * @param {Span[]} spans
 * @param {bigint} startUnixNano
 * @param {number} duration
 * @returns {Trace}
 */
export function link(spans, startUnixNano = 0n, duration = 0) {
  /** @type {Map<string, Span>} */
  const byId = new Map();
  for (const s of spans) {
    s.children = [];
    s.parent = null;
    if (!byId.has(s.id)) byId.set(s.id, s);
  }
  /** @type {Span[]} */
  const roots = [];
  for (const s of spans) {
    const p = s.parentId ? byId.get(s.parentId) : undefined;
    if (p && p !== s) {
      s.parent = p;
      p.children.push(s);
      s.orphan = false;
    } else {
      s.orphan = Boolean(s.parentId);
      roots.push(s);
    }
  }
  // Spans a root does not reach sit on a parent loop (bad input): each loop is cut at one of
  // its spans, which becomes a root.
  /** @type {Set<Span>} */
  const reached = new Set();
  const reach = (/** @type {Span} */ r) => {
    const todo = [r];
    while (todo.length) {
      const s = /** @type {Span} */ (todo.pop());
      if (reached.has(s)) continue;
      reached.add(s);
      todo.push(...s.children);
    }
  };
  roots.forEach(reach);
  for (const s of spans) {
    if (reached.has(s) || !s.parent) continue;
    const p = s.parent;
    p.children = p.children.filter((c) => c !== s);
    s.parent = null;
    s.orphan = true;
    roots.push(s);
    reach(s);
  }
  const byStart = (/** @type {Span} */ a, /** @type {Span} */ b) => a.start - b.start || a.end - b.end || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  roots.sort((a, b) => (a.orphan === b.orphan ? byStart(a, b) : a.orphan ? 1 : -1));
  /** @type {Span[]} */
  const ordered = [];
  /** @type {Span[]} */
  const stack = [...roots].reverse();
  for (const r of roots) r.depth = 0;
  while (stack.length) {
    const s = /** @type {Span} */ (stack.pop());
    ordered.push(s);
    s.children.sort(byStart);
    for (let i = s.children.length - 1; i >= 0; i--) {
      s.children[i].depth = s.depth + 1;
      stack.push(s.children[i]);
    }
  }
  if (!duration) for (const s of spans) duration = Math.max(duration, s.end);
  const services = [...new Set(ordered.map((s) => s.service))];
  const traceId = spans.find((s) => s.traceId)?.traceId ?? '';
  return { traceId, spans: ordered, roots, byId, startUnixNano, duration, services };
}

/** @param {Span} s @param {string} key */
export function attr(s, key) {
  return s.attributes.find((a) => a.key === key)?.value ?? s.resource.find((a) => a.key === key)?.value;
}
