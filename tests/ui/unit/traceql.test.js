import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQuery, completionContext, tokenize, parseTags } from '../../../crates/server/ui/js/traceql.js';

test('the form writes one spanset', () => {
  assert.equal(buildQuery({}), '{}');
  assert.equal(
    buildQuery({ service: 'shop', operation: 'GET "/a"', tags: 'http.status_code=500 span.user="a b" error=true', minDuration: '100ms', maxDuration: '2s' }),
    '{ resource.service.name = "shop" && name = "GET \\"/a\\"" && .http.status_code = 500 && span.user = "a b" && .error = true && duration >= 100ms && duration <= 2s }',
  );
  assert.throws(() => buildQuery({ minDuration: '5' }), /not a duration/);
  assert.throws(() => parseTags('novalue'), /key=value/);
});

test('the tokenizer colours every character once', () => {
  const q = '{ resource.service.name = "shop" && duration > 1.5s } | count() > 2';
  const toks = tokenize(q);
  assert.equal(toks.map((t) => t.text).join(''), q);
  const types = Object.fromEntries(toks.filter((t) => t.type !== 'space').map((t) => [t.text, t.type]));
  assert.equal(types['resource.service.name'], 'attribute');
  assert.equal(types['"shop"'], 'string');
  assert.equal(types['1.5s'], 'duration');
  assert.equal(types.duration, 'intrinsic');
  assert.equal(types.count, 'function');
  assert.equal(types['&&'], 'operator');
  assert.equal(tokenize('{ "unterminated }').at(-1).type, 'string');
});

test('completion knows tags from values', () => {
  assert.deepEqual(completionContext('{ span.http', 11), { kind: 'tag', scope: 'span', prefix: 'span.http', from: 2 });
  assert.deepEqual(completionContext('{ .ht', 5), { kind: 'tag', scope: '', prefix: '.ht', from: 2 });
  const v = completionContext('{ resource.service.name = "sh', 29);
  assert.equal(v.kind, 'value');
  assert.equal(v.tag, 'resource.service.name');
  assert.equal(v.prefix, 'sh');
  assert.equal(v.from, 26);
  assert.equal(completionContext('{ name = ', 9).tag, 'name');
  assert.equal(completionContext('', 0), null);
});
