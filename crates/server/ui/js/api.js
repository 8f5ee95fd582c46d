// @ts-check
// Every query the pages make: the token (localStorage) as a bearer token, the chosen tenant as
// X-Scope-OrgID, and errors as exceptions carrying the server's own message.

const TOKEN = 'spoor.token';
const TENANT = 'spoor.tenant';

export const settings = {
  /** Set by the page when multi-tenancy is on: queries then wait for a tenant. */
  tenantRequired: false,
  get token() {
    return localStorage.getItem(TOKEN) ?? '';
  },
  set token(v) {
    if (v) localStorage.setItem(TOKEN, v);
    else localStorage.removeItem(TOKEN);
  },
  get tenant() {
    return localStorage.getItem(TENANT) ?? '';
  },
  set tenant(v) {
    if (v) localStorage.setItem(TENANT, v);
    else localStorage.removeItem(TENANT);
  },
};

export class ApiError extends Error {
  /** @param {number} status @param {string} message */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Listeners told when the server refuses the credentials (401), so the page can ask for a token. */
export const onUnauthorized = new Set();

/**
 * GET `path` (with `params`) as JSON.
 * @param {string} path
 * @param {Record<string, string | number | undefined | null>} [params]
 * @param {{ tenant?: boolean, signal?: AbortSignal }} [opts]
 */
export async function get(path, params = {}, opts = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const url = q.toString() ? `${path}?${q}` : path;
  if (opts.tenant !== false && settings.tenantRequired && !settings.tenant) {
    throw new ApiError(0, 'Multi-tenancy is on: choose a tenant (top right) first.');
  }
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
  if (settings.token) headers.Authorization = `Bearer ${settings.token}`;
  if (opts.tenant !== false && settings.tenant) headers['X-Scope-OrgID'] = settings.tenant;
  let resp;
  try {
    resp = await fetch(url, { headers, signal: opts.signal });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the server: ${e instanceof Error ? e.message : e}`);
  }
  const text = await resp.text();
  if (!resp.ok) {
    if (resp.status === 401) for (const f of onUnauthorized) f();
    let msg = text.trim();
    try {
      const j = JSON.parse(text);
      msg = j.errors?.[0]?.msg ?? j.error ?? j.message ?? msg;
    } catch {
      // plain-text error, as Tempo's API answers
    }
    throw new ApiError(resp.status, `${resp.status} ${resp.statusText}: ${msg || 'no message'}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(resp.status, `${path} did not answer JSON`);
  }
}
