/**
 * The webview's handle on its host: acquireVsCodeApi() (once: a second call throws), typed with the
 * panel's message contract, and the state VS Code keeps while the view is hidden.
 * Must not import: vscode (this runs in the webview's page).
 */
import type { FromWebview, WebviewState } from "../messages";
import { DEFAULT_SORT, FILTERS, SORT_KEYS, type Filter } from "../model";

interface VsCodeApi {
  postMessage(message: unknown): void;
  getState(): unknown;
  setState(state: unknown): void;
}

declare function acquireVsCodeApi(): VsCodeApi;

const api = acquireVsCodeApi();

export function post(message: FromWebview): void {
  api.postMessage(message);
}

export function loadState(): WebviewState {
  const s = api.getState() as Partial<WebviewState> | undefined | null;
  const sort = s?.sort && SORT_KEYS.includes(s.sort.key) ? { key: s.sort.key, desc: !!s.sort.desc } : DEFAULT_SORT;
  const widths: WebviewState["widths"] = {};
  for (const [k, v] of Object.entries(s?.widths ?? {})) {
    if (SORT_KEYS.includes(k as never) && typeof v === "number" && v >= 16 && v <= 2000) widths[k as keyof typeof widths] = v;
  }
  return {
    filter: s && FILTERS.includes(s.filter as Filter) ? (s.filter as Filter) : "all",
    text: s && typeof s.text === "string" ? s.text : "",
    sort,
    widths,
    selected: s && typeof s.selected === "number" ? s.selected : null,
    scrollTop: s && typeof s.scrollTop === "number" && s.scrollTop >= 0 ? s.scrollTop : 0,
  };
}

export function saveState(state: WebviewState): void {
  api.setState(state);
}
