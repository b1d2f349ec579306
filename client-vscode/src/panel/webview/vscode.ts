/**
 * The webview's handle on its host: acquireVsCodeApi() (once: a second call throws), typed with the
 * panel's message contract, and the state VS Code keeps while the view is hidden.
 * Must not import: vscode (this runs in the webview's page).
 */
import type { FromWebview, WebviewState } from "../messages";
import { FILTERS, type Filter } from "../model";

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
  return {
    filter: s && FILTERS.includes(s.filter as Filter) ? (s.filter as Filter) : "all",
    selected: s && typeof s.selected === "number" ? s.selected : null,
    scrollTop: s && typeof s.scrollTop === "number" && s.scrollTop >= 0 ? s.scrollTop : 0,
  };
}

export function saveState(state: WebviewState): void {
  api.setState(state);
}
