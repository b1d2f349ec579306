/**
 * The panel's webview script: builds the panel, applies the host's messages to the model
 * (panel/model.ts), and redraws what changed at most once per animation frame, so that progress
 * samples streaming in at any rate cost one redraw per frame. Filters, sort order, column widths,
 * selection and scroll position are kept with setState, so the panel looks the same after it was hidden.
 * Must not import: vscode (this runs in the webview's page).
 */
import "uplot/dist/uPlot.min.css";
import "./panel.css";
import type { ExperimentPayload } from "../../../../protocol/nightlab-protocol";
import type { SortOrder, ToWebview, WebviewState } from "../messages";
import {
  applyMessage, countByStatus, curveSeries, dismissError, filterRows, initialModel, nextSort, numberDigits, progressSeries,
  sortRows, stagesOf, type Filter, type PanelModel,
} from "../model";
import { LossChart, ProgressChart } from "./charts";
import { DetailView } from "./detail";
import { el, onThemeChange } from "./dom";
import { Header } from "./header";
import { SwarmView } from "./swarm";
import { ExperimentTable } from "./table";
import { loadState, post, saveState } from "./vscode";

const ui: WebviewState = loadState();
let model: PanelModel = initialModel();
let drawn: PanelModel | null = null;
let drawnUi: WebviewState | null = null;
let frame = 0;
let scrollRestored = false;
let rowsCache: { experiments: readonly ExperimentPayload[]; filter: Filter; text: string; sort: SortOrder;
  rows: readonly ExperimentPayload[] } | null = null;
/** the experiment (and its status) whose recorded curves were asked for last */
let askedCurves = "";

function select(number: number): void {
  setUi({ selected: number });
  post({ type: "select", number });
  render();
  table.reveal(number);
}

const header = new Header({
  control: (action) => post({ type: "control", action }),
  applyBest: () => post({ type: "applyBest" }),
  chooseRoot: (root) => post({ type: "chooseRoot", root }),
  dismissError: () => update(dismissError(model)),
});
const swarm = new SwarmView((lineage) => post({ type: "chooseLineage", lineage }));
const table = new ExperimentTable({
  select,
  accept: (number) => post({ type: "accept", number }),
  reject: (number) => post({ type: "reject", number }),
  filter(filter) {
    setUi({ filter, scrollTop: 0 });
    render();
    table.scrollTop = 0;
    if (ui.selected !== null) table.reveal(ui.selected);
  },
  text(text) {
    setUi({ text, scrollTop: 0 });
    render();
    table.scrollTop = 0;
  },
  sort(key) {
    setUi({ sort: nextSort(ui.sort, key) });
    render();
    if (ui.selected !== null) table.reveal(ui.selected);
  },
  resize(widths) {
    setUi({ widths });
    render();
  },
  scrolled(scrollTop) {
    ui.scrollTop = scrollTop;
    saveSoon();
  },
});
const detail = new DetailView({
  openDiff: (number) => post({ type: "openDiff", number }),
  accept: (number) => post({ type: "accept", number }),
  reject: (number) => post({ type: "reject", number }),
  rerun: (number) => post({ type: "rerun", number }),
  close() {
    setUi({ selected: null });
    render();
  },
});
const loss = new LossChart();
const progress = new ProgressChart((number) => select(number));

const app = document.getElementById("app")!;
app.removeAttribute("aria-busy");
app.replaceChildren(header.root, swarm.root, el("section", { class: "charts" }, loss.root, progress.root), table.root, detail.root);

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
  const c = rowsCache;
  if (!c || c.experiments !== model.experiments || c.filter !== ui.filter || c.text !== ui.text || c.sort !== ui.sort) {
    const shown = filterRows(model.experiments, ui.filter, ui.text);
    rowsCache = { experiments: model.experiments, filter: ui.filter, text: ui.text, sort: ui.sort, rows: sortRows(shown, ui.sort) };
  }
  return rowsCache!.rows;
}

/** The selected experiment's recorded runs, asked for once per experiment and status (a finished run has all). */
function askCurves(e: ExperimentPayload | null): void {
  if (!e || e.status === "running" || !model.loaded || model.problem) return;
  const key = `${model.root}|${e.number}|${e.status}|${e.repeats ?? 1}`;
  if (key === askedCurves) return;
  askedCurves = key;
  post({ type: "curves", number: e.number, stages: stagesOf(e) });
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
  if (!d || m.state !== d.state) swarm.update(m.state);

  const uiChanged = !drawnUi || drawnUi.filter !== ui.filter || drawnUi.selected !== ui.selected || drawnUi.text !== ui.text
    || drawnUi.sort !== ui.sort || drawnUi.widths !== ui.widths;
  if (!d || uiChanged || m.experiments !== d.experiments || m.live !== d.live || m.state !== d.state) {
    table.update({ rows: rows(), counts: countByStatus(m.experiments), filter: ui.filter, text: ui.text, sort: ui.sort,
      widths: ui.widths, digits: numberDigits(m.experiments), selected: ui.selected, metricName, direction, live: m.live,
      anyAtAll: m.experiments.length > 0 });
  }
  if (!d || m.experiments !== d.experiments || direction !== d.state?.direction || metricName !== d.state?.metricName
      || m.state?.baseline !== d.state?.baseline) {
    progress.setMetric(metricName);
    progress.set(progressSeries(m.experiments, direction, m.state?.baseline));
  }
  if (!d || m.live !== d.live || m.best !== d.best || m.state?.running !== d.state?.running) {
    const number = m.live?.number ?? null;
    loss.set({
      curve: curveSeries(m.live?.runs ?? [], m.best, number),
      number,
      running: m.live !== null && (m.state?.running.includes(m.live.number) ?? false),
    });
  }
  const selected = ui.selected === null ? null : m.experiments.find((e) => e.number === ui.selected) ?? null;
  askCurves(selected);
  detail.update({ experiment: selected, curves: m.curves, live: m.live, best: m.best, metricName,
    tag: m.state?.tag ?? "", trusted: m.trusted, serverUp: m.loaded && !m.problem });
  if (m.loaded && !scrollRestored) {
    scrollRestored = true; // once: the rows are there now, so the restored scroll position holds
    table.scrollTop = ui.scrollTop;
  }
  drawn = m;
  drawnUi = { ...ui };
}
