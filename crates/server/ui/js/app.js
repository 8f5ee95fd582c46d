// @ts-check
// The page's entry: the session (token, tenant, theme), and a router that maps the URL to a
// page without reloading, so every view is a deep link and the back button works.

import { get, settings, onUnauthorized } from './api.js';
import { fill, h, errorBox } from './dom.js';
import { uiConfig, navigate, NAVIGATED } from './session.js';


/** @type {(() => void) | null} */
let cleanup = null;
let renderSeq = 0;

const routes = [
  { re: /^\/$/, page: 'search', load: () => import('./pages/search.js') },
  { re: /^\/trace\/([^/]+)$/, page: 'search', load: () => import('./pages/trace.js') },
  { re: /^\/compare\/([^/]+)\/([^/]+)$/, page: 'search', load: () => import('./pages/compare.js') },
  { re: /^\/services$/, page: 'services', load: () => import('./pages/services.js') },
  { re: /^\/services\/([^/]+)$/, page: 'services', load: () => import('./pages/health.js') },
  { re: /^\/delivery$/, page: 'delivery', load: () => import('./pages/delivery.js') },
];

/** Renders the page the URL names. */
export async function render() {
  const seq = ++renderSeq;
  const main = /** @type {HTMLElement} */ (document.getElementById('main'));
  if (cleanup) cleanup();
  cleanup = null;
  const path = location.pathname;
  const route = routes.find((r) => r.re.test(path));
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.toggleAttribute('aria-current', Boolean(route && /** @type {HTMLElement} */ (a).dataset.nav === route.page));
  }
  if (!route) {
    fill(main, h('h1', null, 'Not found'), h('p', null, `Nothing lives at ${path}.`));
    return;
  }
  const args = /** @type {RegExpExecArray} */ (route.re.exec(path)).slice(1).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  try {
    const mod = await route.load();
    if (seq !== renderSeq) return;
    fill(main);
    const c = await mod.render(main, args, new URLSearchParams(location.search));
    if (seq === renderSeq && typeof c === 'function') cleanup = c;
  } catch (e) {
    if (seq === renderSeq) fill(main, errorBox(e));
  }
}


function interceptLinks() {
  document.addEventListener('click', (ev) => {
    const a = /** @type {HTMLElement | null} */ (ev.target instanceof Element ? ev.target.closest('a[href]') : null);
    if (!a || !(a instanceof HTMLAnchorElement)) return;
    if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey || a.target) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/ui/')) return;
    ev.preventDefault();
    navigate(url.pathname + url.search + url.hash);
  });
  window.addEventListener('popstate', () => render());
  window.addEventListener(NAVIGATED, () => render());
}

function setupTheme() {
  const apply = () => {
    const t = localStorage.getItem('spoor.theme');
    if (t) document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
  };
  apply();
  const button = /** @type {HTMLButtonElement} */ (document.getElementById('theme'));
  button.addEventListener('click', () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === 'dark'
      : matchMedia('(prefers-color-scheme: dark)').matches;
    localStorage.setItem('spoor.theme', dark ? 'light' : 'dark');
    apply();
    window.dispatchEvent(new Event('spoor:theme'));
  });
}

function setupToken() {
  const dialog = /** @type {HTMLDialogElement} */ (document.getElementById('token-dialog'));
  const input = /** @type {HTMLInputElement} */ (document.getElementById('token-input'));
  const button = /** @type {HTMLButtonElement} */ (document.getElementById('token-button'));
  button.hidden = !uiConfig.auth;
  const label = () => (button.textContent = settings.token ? 'Token ✓' : 'Token');
  label();
  button.addEventListener('click', () => {
    input.value = settings.token;
    dialog.showModal();
  });
  dialog.addEventListener('close', async () => {
    if (dialog.returnValue === 'save') settings.token = input.value.trim();
    if (dialog.returnValue === 'clear') settings.token = '';
    if (dialog.returnValue === 'save' || dialog.returnValue === 'clear') {
      label();
      await loadTenants();
      render();
    }
  });
  let asked = false;
  onUnauthorized.add(() => {
    // Without auth a 401 is about the tenant, not a token.
    if (uiConfig.auth && !asked && !dialog.open) {
      asked = true;
      input.value = settings.token;
      dialog.showModal();
    }
  });
}

/** Fills the tenant picker with the token's tenants (a free field when it may use any). */
async function loadTenants() {
  const label = /** @type {HTMLElement} */ (document.querySelector('.tenant'));
  const select = /** @type {HTMLSelectElement} */ (document.getElementById('tenant'));
  const text = /** @type {HTMLInputElement} */ (document.getElementById('tenant-text'));
  label.hidden = !uiConfig.multitenancy;
  settings.tenantRequired = uiConfig.multitenancy;
  if (!uiConfig.multitenancy) {
    settings.tenant = '';
    return;
  }
  /** @type {{ tenants: string[], allTenants: boolean }} */
  let who = { tenants: [], allTenants: true };
  try {
    who = await get('/api/tenants', {}, { tenant: false });
  } catch {
    // Without a valid token there is nothing to list yet; the token dialog asks for one.
  }
  const pickList = !who.allTenants && who.tenants.length > 0;
  select.hidden = !pickList;
  text.hidden = pickList;
  if (pickList) {
    fill(select, ...who.tenants.map((t) => h('option', { value: t }, t)));
    if (!who.tenants.includes(settings.tenant)) settings.tenant = who.tenants[0];
    select.value = settings.tenant;
  } else {
    text.value = settings.tenant;
  }
}

function setupTenantPicker() {
  const select = /** @type {HTMLSelectElement} */ (document.getElementById('tenant'));
  const text = /** @type {HTMLInputElement} */ (document.getElementById('tenant-text'));
  select.addEventListener('change', () => {
    settings.tenant = select.value;
    render();
  });
  text.addEventListener('change', () => {
    settings.tenant = text.value.trim();
    render();
  });
}

async function start() {
  setupTheme();
  try {
    Object.assign(uiConfig, await get('/ui/config.json', {}, { tenant: false }));
  } catch (e) {
    fill(/** @type {HTMLElement} */ (document.getElementById('main')), errorBox(e));
    return;
  }
  setupToken();
  setupTenantPicker();
  interceptLinks();
  await loadTenants();
  render();
}

start();
