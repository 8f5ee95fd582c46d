// @ts-check
// TraceQL for the search page: a tokenizer for highlighting, the context autocomplete needs,
// and the query the simple form writes. Pure (Node's tests import it). The server's parser
// stays the judge of what is valid: this only colours and suggests.

/** @typedef {{ type: string, text: string, start: number }} Token */

export const INTRINSICS = [
  'name', 'status', 'statusMessage', 'kind', 'duration', 'rootName', 'rootServiceName',
  'traceDuration', 'span:name', 'span:status', 'span:statusMessage', 'span:kind', 'span:duration',
  'span:id', 'span:parentID', 'trace:rootName', 'trace:rootService', 'trace:duration', 'trace:id',
  'event:name', 'link:traceID', 'link:spanID', 'instrumentation:name', 'instrumentation:version',
];
const KEYWORDS = new Set(['true', 'false', 'nil', 'ok', 'error', 'unset', 'unspecified', 'internal', 'server', 'client', 'producer', 'consumer']);
const FUNCTIONS = new Set([
  'count', 'avg', 'min', 'max', 'sum', 'select', 'by', 'coalesce', 'rate', 'count_over_time',
  'min_over_time', 'max_over_time', 'avg_over_time', 'sum_over_time', 'quantile_over_time', 'histogram_over_time',
  'compare', 'topk', 'bottomk', 'with',
]);
const OPERATORS = ['&&', '||', '!=', '>=', '<=', '=~', '!~', '>>', '<<', '~', '=', '>', '<', '!', '|', '&', '+', '-', '*', '/', '%', '^'];
const DURATION = /^\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)/;
const NUMBER = /^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?/;
const ATTRIBUTE = /^(?:(?:span|resource|event|link|instrumentation|parent\.span|parent\.resource|parent)?\.)[\w.\-/]+|^(?:span|resource|event|link|instrumentation)\."(?:[^"\\]|\\.)*"/;
const IDENT = /^[A-Za-z_][\w:]*/;

/** @param {string} text @returns {Token[]} */
export function tokenize(text) {
  /** @type {Token[]} */
  const out = [];
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    let m;
    let type = 'error';
    let len = 1;
    if ((m = /^\s+/.exec(rest))) (type = 'space'), (len = m[0].length);
    else if (rest[0] === '"' || rest[0] === '`') {
      const q = rest[0];
      let j = 1;
      while (j < rest.length && rest[j] !== q) j += rest[j] === '\\' && q === '"' ? 2 : 1;
      (type = 'string'), (len = Math.min(j + 1, rest.length));
    } else if ((m = DURATION.exec(rest))) (type = 'duration'), (len = m[0].length);
    else if ((m = NUMBER.exec(rest)) && !(rest[0] === '-' && out.length && /attribute|number|duration|intrinsic|paren/.test(lastType(out))))
      (type = 'number'), (len = m[0].length);
    else if ((m = ATTRIBUTE.exec(rest))) (type = 'attribute'), (len = m[0].length);
    else if ((m = IDENT.exec(rest))) {
      const w = m[0];
      len = w.length;
      type = INTRINSICS.includes(w) ? 'intrinsic' : KEYWORDS.has(w) ? 'keyword' : FUNCTIONS.has(w) ? 'function' : 'error';
    } else if ('{}'.includes(rest[0])) type = 'brace';
    else if ('()[],'.includes(rest[0])) type = 'paren';
    else {
      const op = OPERATORS.find((o) => rest.startsWith(o));
      if (op) (type = 'operator'), (len = op.length);
    }
    out.push({ type, text: text.slice(i, i + len), start: i });
    i += len;
  }
  return out;
}

/** @param {Token[]} tokens */
function lastType(tokens) {
  for (let i = tokens.length - 1; i >= 0; i--) if (tokens[i].type !== 'space') return tokens[i].type;
  return '';
}

/**
 * What the text before `cursor` asks to complete: an attribute name (`tag`, with the scope
 * typed so far) or a value of an attribute (`value`), and the partial word to replace.
 * @param {string} text
 * @param {number} cursor
 * @returns {{ kind: 'tag', scope: string, prefix: string, from: number } | { kind: 'value', tag: string, prefix: string, from: number, quoted: boolean } | null}
 */
export function completionContext(text, cursor) {
  const before = text.slice(0, cursor);
  let m = /(?:^|[\s{(&|!])((span|resource|event|link|instrumentation)?\.([\w.\-/]*))$/.exec(before);
  if (m) return { kind: 'tag', scope: m[2] ?? '', prefix: m[1], from: cursor - m[1].length };
  m = /((?:(?:span|resource|event|link|instrumentation)?\.[\w.\-/]+)|[A-Za-z_][\w:]*)\s*(?:=|!=|=~|!~)\s*("?)([^"\s}]*)$/.exec(before);
  if (m && (m[1].includes('.') || INTRINSICS.includes(m[1]))) {
    return { kind: 'value', tag: m[1], prefix: m[3], from: cursor - m[3].length - m[2].length, quoted: m[2] === '"' };
  }
  m = /(?:^|[\s{(&|!])([A-Za-z_][\w:]*)$/.exec(before);
  if (m && /\{[^}]*$/.test(before)) return { kind: 'tag', scope: 'intrinsic', prefix: m[1], from: cursor - m[1].length };
  return null;
}

/** A TraceQL string literal. @param {string} s */
export function quote(s) {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** @param {string} key */
function attributeRef(key) {
  const k = key.trim();
  if (/^(span|resource|event|link|instrumentation)?\./.test(k)) return k;
  if (INTRINSICS.includes(k)) return k;
  return `.${k}`;
}

/** @param {string} v */
function literal(v) {
  const t = v.trim();
  if (/^-?\d+(\.\d+)?$/.test(t) || /^(true|false)$/.test(t) || DURATION.test(t) && DURATION.exec(t)?.[0] === t) return t;
  if (/^(ok|error|unset)$/.test(t)) return t;
  const unq = /^"(.*)"$/.exec(t);
  return quote(unq ? unq[1] : t);
}

/**
 * Splits `k=v k2="v 2"` (logfmt-like) into pairs.
 * @param {string} tags
 * @returns {[string, string][]}
 */
export function parseTags(tags) {
  /** @type {[string, string][]} */
  const out = [];
  const re = /\s*([^\s=]+)\s*=\s*("(?:[^"\\]|\\.)*"|\S+)/g;
  let m;
  let pos = 0;
  while ((m = re.exec(tags))) {
    if (tags.slice(pos, m.index).trim()) throw new Error(`cannot read tags near ${JSON.stringify(tags.slice(pos, m.index).trim())}: write key=value`);
    out.push([m[1], m[2]]);
    pos = re.lastIndex;
  }
  if (tags.slice(pos).trim()) throw new Error(`cannot read tags near ${JSON.stringify(tags.slice(pos).trim())}: write key=value`);
  return out;
}

/**
 * The TraceQL the simple form stands for. Every condition is on the same span (one spanset),
 * as Jaeger's search means it.
 * @param {{ service?: string, operation?: string, tags?: string, minDuration?: string, maxDuration?: string }} f
 */
export function buildQuery(f) {
  const conds = [];
  if (f.service?.trim()) conds.push(`resource.service.name = ${quote(f.service.trim())}`);
  if (f.operation?.trim()) conds.push(`name = ${quote(f.operation.trim())}`);
  for (const [k, v] of parseTags(f.tags ?? '')) conds.push(`${attributeRef(k)} = ${literal(v)}`);
  for (const [field, op] of /** @type {const} */ ([['minDuration', '>='], ['maxDuration', '<=']])) {
    const d = f[field]?.trim();
    if (!d) continue;
    if (DURATION.exec(d)?.[0] !== d) throw new Error(`${field === 'minDuration' ? 'min' : 'max'} duration ${JSON.stringify(d)} is not a duration like 120ms, 1.5s or 2m`);
    conds.push(`duration ${op} ${d}`);
  }
  return `{ ${conds.join(' && ')} }`.replace('{  }', '{}');
}
