/**
 * The experiments table with virtual scrolling: a spacer as tall as all rows, and only the rows in view
 * (plus an overscan) as elements, reused as the window moves, so that thousands of experiments scroll
 * smoothly while progress streams. Fixed row height (ROW_HEIGHT, the same as VS Code's lists).
 * Must not import: vscode.
 */
import type { ExperimentPayload, MetricDirection } from "../../../../protocol/nightlab-protocol";
import {
  canReview, deltaClass, FILTERS, fmtDelta, fmtDuration, fmtMetric, fmtSigma, moveSelection, rowTitle,
  scrollToRow, statusLabel, visibleWindow, type Filter, type LiveRun,
} from "../model";
import { el, setAttr, setText } from "./dom";

export const ROW_HEIGHT = 22;
const OVERSCAN = 8;

export interface TableEvents {
  select(number: number): void;
  accept(number: number): void;
  reject(number: number): void;
  filter(filter: Filter): void;
  scrolled(scrollTop: number): void;
}

export interface TableProps {
  rows: readonly ExperimentPayload[];
  counts: Record<Filter, number>;
  filter: Filter;
  selected: number | null;
  metricName: string;
  direction: MetricDirection;
  live: LiveRun | null;
  /** there are experiments, but the filter hides them all */
  anyAtAll: boolean;
}

interface RowEls {
  root: HTMLElement;
  number: HTMLElement;
  badge: HTMLElement;
  metric: HTMLElement;
  delta: HTMLElement;
  sigma: HTMLElement;
  description: HTMLElement;
  time: HTMLElement;
  actions: HTMLElement;
  /** what the row shows now, to skip rows that did not change */
  key: unknown[];
}

export class ExperimentTable {
  readonly root: HTMLElement;
  private readonly viewport: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly rowsEl: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly select: HTMLSelectElement;
  private readonly metricHead: HTMLElement;
  private readonly pool: RowEls[] = [];
  private props: TableProps | null = null;
  private frame = 0;

  constructor(private readonly events: TableEvents) {
    this.select = el("select", { class: "filter", "aria-label": "Show experiments with status" });
    for (const f of FILTERS) this.select.append(el("option", { value: f }, f));
    this.select.addEventListener("change", () => events.filter(this.select.value as Filter));
    this.metricHead = el("span", { class: "c-metric" }, "val_bpb");
    const head = el("div", { class: "thead", role: "row" },
      el("span", { class: "c-num" }, "#"), el("span", { class: "c-status" }, "Status"), this.metricHead,
      el("span", { class: "c-delta" }, "\u0394"), el("span", { class: "c-sigma" }, "\u03c3"),
      el("span", { class: "c-desc" }, "Description"), el("span", { class: "c-time" }, "Time"));
    this.rowsEl = el("div", { class: "rows", role: "rowgroup" });
    this.spacer = el("div", { class: "spacer" }, this.rowsEl);
    this.empty = el("div", { class: "empty", hidden: true });
    this.viewport = el("div", { class: "viewport", tabindex: 0, role: "grid", "aria-label": "Experiments, newest first" },
      this.spacer, this.empty);
    this.root = el("section", { class: "experiments" },
      el("div", { class: "toolbar" }, el("h2", {}, "Experiments"), this.select), head, this.viewport);

    this.viewport.addEventListener("scroll", () => {
      this.schedule();
      events.scrolled(this.viewport.scrollTop);
    }, { passive: true });
    this.rowsEl.addEventListener("click", (ev) => this.onClick(ev));
    this.viewport.addEventListener("keydown", (ev) => this.onKey(ev));
    new ResizeObserver(() => this.schedule()).observe(this.viewport);
  }

  /** New rows or selection: drawn now (the caller batches per animation frame). */
  update(props: TableProps): void {
    this.props = props;
    this.render();
  }

  get scrollTop(): number {
    return this.viewport.scrollTop;
  }

  set scrollTop(top: number) {
    this.render(); // the spacer's height first, or the browser clamps the scroll to the old one
    this.viewport.scrollTop = top;
    this.render();
  }

  /** Scroll the selected row into view (after the keyboard moved it, or a state restore). */
  reveal(number: number): void {
    const i = this.props?.rows.findIndex((e) => e.number === number) ?? -1;
    if (i < 0) return;
    const top = scrollToRow(i, this.viewport.scrollTop, this.viewport.clientHeight, ROW_HEIGHT);
    if (top !== this.viewport.scrollTop) this.viewport.scrollTop = top;
    this.render();
  }

  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  private render(): void {
    const p = this.props;
    if (!p) return;
    for (const opt of Array.from(this.select.options)) {
      setText(opt, `${opt.value} (${p.counts[opt.value as Filter]})`);
    }
    if (this.select.value !== p.filter) this.select.value = p.filter;
    setText(this.metricHead, p.metricName);
    // the strict policy measures no noise: no empty σ column then
    this.root.classList.toggle("no-sigma", !p.rows.some((e) => e.sigma !== null && e.sigma !== undefined));
    this.spacer.style.height = `${p.rows.length * ROW_HEIGHT}px`;
    this.empty.hidden = p.rows.length > 0;
    setText(this.empty, p.anyAtAll ? `No ${p.filter} experiments.` : "No experiments yet: start the loop to measure the baseline.");

    const w = visibleWindow(p.rows.length, this.viewport.scrollTop, this.viewport.clientHeight, ROW_HEIGHT, OVERSCAN);
    this.rowsEl.style.transform = `translateY(${w.offset}px)`;
    const n = w.end - w.start;
    while (this.pool.length < n) this.rowsEl.append(this.newRow().root);
    for (let k = 0; k < this.pool.length; k++) {
      const r = this.pool[k];
      if (k >= n) {
        r.root.hidden = true;
        continue;
      }
      r.root.hidden = false;
      this.fill(r, p.rows[w.start + k], w.start + k, p);
    }
    // a pool grown for a tall panel shrinks back when far too big (after a filter or a resize)
    while (this.pool.length > n + 2 * OVERSCAN + 8) this.pool.pop()!.root.remove();
  }

  private newRow(): RowEls {
    const cell = (cls: string) => el("span", { class: cls });
    const r: RowEls = {
      root: el("div", { class: "row", role: "row" }),
      number: cell("c-num"), badge: el("span", { class: "badge" }), metric: cell("c-metric"), delta: cell("c-delta"),
      sigma: cell("c-sigma"), description: cell("c-desc"), time: cell("c-time"),
      actions: el("span", { class: "row-actions" },
        el("button", { class: "secondary small", "data-act": "accept", title: "Accept: bring this change into your files" },
          el("span", { class: "glyph", "aria-hidden": "true" }, "\u2713"), el("span", { class: "label" }, "Accept")),
        el("button", { class: "secondary small", "data-act": "reject", title: "Reject: record that this change is not wanted" },
          el("span", { class: "glyph", "aria-hidden": "true" }, "\u2715"), el("span", { class: "label" }, "Reject"))),
      key: [],
    };
    r.root.append(r.number, el("span", { class: "c-status" }, r.badge), r.metric, r.delta, r.sigma, r.description,
      r.time, r.actions);
    this.pool.push(r);
    return r;
  }

  private fill(r: RowEls, e: ExperimentPayload, index: number, p: TableProps): void {
    const selected = e.number === p.selected;
    const live = p.live !== null && p.live.number === e.number && e.status === "running" ? p.live : null;
    const key = [e, selected, index, p.direction, live?.fraction, live?.stage];
    if (key.every((v, i) => v === r.key[i])) return;
    r.key = key;
    setAttr(r.root, "data-number", String(e.number));
    setAttr(r.root, "data-status", e.status);
    setAttr(r.root, "aria-selected", selected ? "true" : "false");
    setAttr(r.root, "aria-rowindex", String(index + 1));
    r.root.classList.toggle("selected", selected);
    r.root.classList.toggle("baseline", e.baseline);
    setText(r.number, String(e.number));
    setAttr(r.badge, "class", `badge ${e.status}${e.review ? ` ${e.review}` : ""}`);
    setText(r.badge, statusLabel(e));
    setAttr(r.badge, "title", e.review ? `${e.status}, ${e.review} by you` : null);
    // "*": the run printed this number itself (no judge measured it: an autoresearch checkout)
    const own = e.selfReported === true && typeof e.metric === "number";
    setText(r.metric, fmtMetric(e.metric) + (own ? "*" : ""));
    setAttr(r.metric, "title", own ? "self-reported: the run's own printed summary, not measured by a judge" : null);
    setText(r.delta, fmtDelta(e.delta));
    setAttr(r.delta, "class", `c-delta ${deltaClass(e.delta, p.direction)}`);
    setText(r.sigma, fmtSigma(e.sigma));
    setText(r.description, e.baseline ? `${e.description || "baseline"}` : e.description);
    setAttr(r.description, "title", rowTitle(e));
    setText(r.time, e.status === "running"
      ? live && live.stage !== "run" ? live.stage : live?.fraction != null ? `${Math.round(100 * live.fraction)}%` : "\u2026"
      : fmtDuration(e.durationS));
    r.actions.hidden = !(selected && canReview(e));
  }

  private onClick(ev: MouseEvent): void {
    const target = ev.target as HTMLElement;
    const row = target.closest<HTMLElement>(".row");
    const number = Number(row?.dataset.number);
    if (!row || !Number.isFinite(number)) return;
    const act = target.closest<HTMLElement>("button")?.dataset.act;
    if (act === "accept") this.events.accept(number);
    else if (act === "reject") this.events.reject(number);
    else this.events.select(number);
    if (!act) this.viewport.focus({ preventScroll: true });
  }

  private onKey(ev: KeyboardEvent): void {
    const p = this.props;
    if (!p) return;
    const page = Math.max(1, Math.floor(this.viewport.clientHeight / ROW_HEIGHT) - 1);
    const delta: Record<string, number> = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page, Home: -Infinity, End: Infinity };
    if (ev.key in delta) {
      ev.preventDefault();
      const next = moveSelection(p.rows, p.selected, delta[ev.key]);
      if (next !== null && next !== p.selected) this.events.select(next);
    } else if (ev.key === "Enter" && p.selected !== null) {
      ev.preventDefault();
      this.events.select(p.selected);
    }
  }
}
