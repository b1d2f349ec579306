/**
 * The panel's webview script: builds the panel, applies the host's messages to the model
 * (panel/model.ts), and redraws what changed at most once per animation frame, so that progress
 * samples streaming in at any rate cost one redraw per frame. Filter, selection and scroll position
 * are kept with setState, so the panel looks the same after it was hidden.
 * Must not import: vscode (this runs in the webview's page).
 */
import "uplot/dist/uPlot.min.css";
import "./panel.css";
import type { ExperimentPayload } from "../../../../protocol/nightlab-protocol";
import type { ToWebview, WebviewState } from "../messages";
import {
  applyMessage, countByStatus, curveSeries, dismissError, filterRows, initialModel, progressSeries, type Filter,
  type PanelModel,
} from "../model";
import { LossChart, ProgressChart } from "./charts";
import { el, onThemeChange } from "./dom";
import { Header } from "./header";
import { ExperimentTable } from "./table";
import { loadState, post, saveState } from "./vscode";

const ui: WebviewState = loadState();
let model: PanelModel = initialModel();
let drawn: PanelModel | null = null;
let drawnUi: WebviewState | null = null;
let frame = 0;
let scrollRestored = false;
let rowsCache: { experiments: readonly ExperimentPayload[]; filter: Filter; rows: readonly ExperimentPayload[] } | null = null;

const header = new Header({
  control: (action) => post({ type: "control", action }),
  dismissError: () => update(dismissError(model)),
});
const table = new ExperimentTable({
  select(number) {
    setUi({ selected: number });
    post({ type: "select", number });
    render();
    table.reveal(number);
  },
  accept: (number) => post({ type: "accept", number }),
  reject: (number) => post({ type: "reject", number }),
  filter(filter) {
    setUi({ filter, scrollTop: 0 });
    render();
    table.scrollTop = 0;
    if (ui.selected !== null) table.reveal(ui.selected);
  },
  scrolled(scrollTop) {
    ui.scrollTop = scrollTop;
    saveSoon();
  },
});
const loss = new LossChart();
const progress = new ProgressChart();

const app = document.getElementById("app")!;
app.removeAttribute("aria-busy");
app.replaceChildren(header.root, el("section", { class: "charts" }, loss.root, progress.root), table.root);

window.addEventListener("message", (ev: MessageEvent) => {
  const msg = ev.data as ToWebview;
  if (!msg || typeof msg !== "object" || typeof msg.type !== "string") return;
  update(applyMessage(model, msg));
});
onThemeChange(() => {
  loss.retheme();
  progress.retheme();
});
render();
post({ type: "ready" });

function update(next: PanelModel): void {
  model = next;
  if (!frame) frame = requestAnimationFrame(() => render());
}

function setUi(patch: Partial<WebviewState>): void {
  Object.assign(ui, patch);
  saveState({ ...ui });
}

let saveTimer: ReturnType<typeof setTimeout> | undefined;
function saveSoon(): void {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => saveState({ ...ui }), 150);
}

function rows(): readonly ExperimentPayload[] {
  if (!rowsCache || rowsCache.experiments !== model.experiments || rowsCache.filter !== ui.filter) {
    rowsCache = { experiments: model.experiments, filter: ui.filter, rows: filterRows(model.experiments, ui.filter) };
  }
  return rowsCache.rows;
}

/** Draw what changed since the last frame. */
function render(): void {
  if (frame) cancelAnimationFrame(frame);
  frame = 0;
  const m = model;
  const d = drawn;
  const direction = m.state?.direction ?? "lower";
  const metricName = m.state?.metricName ?? "val_bpb";
  if (m !== d) header.update(m);

  const uiChanged = !drawnUi || drawnUi.filter !== ui.filter || drawnUi.selected !== ui.selected;
  if (!d || uiChanged || m.experiments !== d.experiments || m.live !== d.live || m.state !== d.state) {
    table.update({ rows: rows(), counts: countByStatus(m.experiments), filter: ui.filter, selected: ui.selected,
      metricName, direction, live: m.live, anyAtAll: m.experiments.length > 0 });
  }
  if (!d || m.experiments !== d.experiments || direction !== d.state?.direction || metricName !== d.state?.metricName) {
    progress.setMetric(metricName);
    progress.set(progressSeries(m.experiments, direction));
  }
  if (!d || m.live?.samples !== d.live?.samples || m.live?.number !== d.live?.number || m.best !== d.best
      || m.state?.running !== d.state?.running) {
    loss.set({
      curve: curveSeries(m.live?.samples ?? [], m.best?.points ?? []),
      number: m.live?.number ?? null,
      running: m.live !== null && (m.state?.running.includes(m.live.number) ?? false),
      best: m.best?.number ?? null,
    });
  }
  if (m.loaded && !scrollRestored) {
    scrollRestored = true; // once: the rows are there now, so the restored scroll position holds
    table.scrollTop = ui.scrollTop;
  }
  drawn = m;
  drawnUi = { ...ui };
}
