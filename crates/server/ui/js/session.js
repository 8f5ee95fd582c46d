// @ts-check
// What every page shares without knowing the others: the UI's configuration (from
// /ui/config.json) and in-page navigation. Navigation only changes the URL and announces it;
// app.js, which knows the pages, renders. So pages never import app.js (no import circle).

/** @typedef {{ traceToLogsUrl: string, auth: boolean, multitenancy: boolean }} UiConfig */

/** @type {UiConfig} */
export const uiConfig = { traceToLogsUrl: '', auth: false, multitenancy: false };

/** The event app.js renders on. */
export const NAVIGATED = 'spoor:navigate';

/** Goes to `url` inside the page (pushState), or replaces the current entry. */
export function navigate(url, replace = false) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  window.dispatchEvent(new Event(NAVIGATED));
}
