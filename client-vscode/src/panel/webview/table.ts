/**
 * The experiments table with virtual scrolling: a spacer as tall as all rows, and only the rows in view
 * (plus an overscan) as elements, reused as the window moves, so that thousands of experiments scroll
 * smoothly while progress streams. Fixed row height (ROW_HEIGHT, the same as VS Code's lists). Columns
 * sort on a click of their header and resize by dragging its right edge; the header sticks to the top
 * of the scrolled area, so it scrolls sideways with the rows when the columns are wider than the panel.
 * Must not import: vscode.
 */
import type { ExperimentPayload, MetricDirection } from "../../../../protocol/nightlab-protocol";
import type { SortKey, SortOrder, WebviewState } from "../messages";
import {
  canReview, deltaClass, FILTERS, fmtDelta, fmtDuration, fmtMetric, fmtSigma, inFileLabel, moveSelection, reviewTitle,
  rowTitle, scrollToRow, statusLabel, visibleWindow, type Filter, type LiveRun,
} from "../model";
import { el, setAttr, setText } from "./dom";

export const ROW_HEIGHT = 22;
const HEAD_HEIGHT = 22;
const OVERSCAN = 8;
const GAP = 5;
const PAD = 12;

interface Column {
  key: SortKey;
  cls: string;
  label: string;
  title: string;
  /** the default width in pixels, or a share of what is left (with a minimum in pixels) */
  width: number | { fr: number; min: number };
}

const COLUMNS: readonly Column[] = [
  { key: "number", cls: "c-num", label: "#", title: "Experiment number", width: 0 /* from the digits */ },
  { key: "status", cls: "c-status", label: "Verdict", title: "The loop's verdict; beside it, whether the change is in your files and your review", width: 82 },
  { key: "metric", cls: "c-metric", label: "val_bpb", title: "The metric (mean of the experiment's runs)", width: 56 },
  { key: "delta", cls: "c-delta", label: "\u0394", title: "Against the best before it", width: 60 },
  { key: "sigma", cls: "c-sigma", label: "\u03c3", title: "The noise estimate the verdict used", width: 40 },
  { key: "description", cls: "c-desc", label: "Description", title: "What the agent changed", width: { fr: 3, min: 52 } },
  { key: "reason", cls: "c-reason", label: "Reason", title: "Why it was kept, discarded, or how it crashed", width: { fr: 2, min: 36 } },
  { key: "time", cls: "c-time", label: "Time", title: "Wall clock of all its runs", width: 42 },
];

export interface TableEvents {
  select(number: number): void;
  accept(number: number): void;
  reject(number: number): void;
  filter(filter: Filter): void;
  text(text: string): void;
  sort(key: SortKey): void;
  resize(widths: WebviewState["widths"]): void;
  scrolled(scrollTop: number): void;
}

export interface TableProps {
  rows: readonly ExperimentPayload[];
  counts: Record<Filter, number>;
  filter: Filter;
  text: string;
  sort: SortOrder;
  widths: WebviewState["widths"];
  /** digits of the largest experiment number */
  digits: number;
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
  review: HTMLElement;
  inFile: HTMLElement;
  metric: HTMLElement;
  delta: HTMLElement;
  sigma: HTMLElement;
  description: HTMLElement;
  reason: HTMLElement;
  time: HTMLElement;
  actions: HTMLElement;
  /** what the row shows now, to skip rows that did not change */
  key: unknown[];
}

export class ExperimentTable {
  readonly root: HTMLElement;
  private readonly viewport: HTMLElement;
  private readonly head: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly rowsEl: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly select: HTMLSelectElement;
  private readonly search: HTMLInputElement;
  private readonly heads = new Map<SortKey, HTMLElement>();
  private readonly pool: RowEls[] = [];
  private props: TableProps | null = null;
  private frame = 0;
  /** widths while a column's edge is dragged, before the drag ends */
  private dragging: WebviewState["widths"] | null = null;

  constructor(private readonly events: TableEvents) {
    this.select = el("select", { class: "filter", "aria-label": "Show experiments with status" });
    for (const f of FILTERS) this.select.append(el("option", { value: f }, f));
    this.select.addEventListener("change", () => events.filter(this.select.value as Filter));
    this.search = el("input", { class: "text-filter", type: "search", placeholder: "Filter: description or reason",
      "aria-label": "Show experiments whose description or reason has these words", spellcheck: "false" });
    this.search.addEventListener("input", () => events.text(this.search.value));
    this.head = el("div", { class: "thead", role: "row" });
    for (const c of COLUMNS) {
      const grip = el("span", { class: "grip", "data-resize": c.key, title: "Drag to resize", "aria-hidden": "true" });
      const h = el("span", { class: `th ${c.cls}`, role: "columnheader", "data-sort": c.key, title: `${c.title}. Click to sort.`,
        tabindex: 0 }, el("span", { class: "th-label" }, c.label), grip);
      grip.addEventListener("pointerdown", (ev) => this.startResize(ev, c.key, h));
      grip.addEventListener("click", (ev) => ev.stopPropagation());
      h.addEventListener("click", () => events.sort(c.key));
      h.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          events.sort(c.key);
        }
      });
      this.heads.set(c.key, h);
      this.head.append(h);
    }
    this.rowsEl = el("div", { class: "rows", role: "rowgroup" });
    this.spacer = el("div", { class: "spacer" }, this.rowsEl);
    this.empty = el("div", { class: "empty", hidden: true });
    this.viewport = el("div", { class: "viewport", tabindex: 0, role: "grid", "aria-label": "Experiments" },
      this.head, this.spacer, this.empty);
    this.root = el("section", { class: "experiments" },
      el("div", { class: "toolbar" }, el("h2", {}, "Experiments"), this.search, this.select), this.viewport);

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
    const top = scrollToRow(i, this.viewport.scrollTop, this.rowsHeight(), ROW_HEIGHT);
    if (top !== this.viewport.scrollTop) this.viewport.scrollTop = top;
    this.render();
  }

  /** The height rows have to show in: the viewport below the sticky header. */
  private rowsHeight(): number {
    return Math.max(0, this.viewport.clientHeight - HEAD_HEIGHT);
  }

  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  /** The grid's columns from the defaults and the user's widths; and the width the row needs at least. */
  private layout(p: TableProps): void {
    const widths = this.dragging ?? p.widths;
    let min = 2 * PAD + GAP * (COLUMNS.length - 1);
    const cols = COLUMNS.map((c) => {
      const own = widths[c.key];
      if (own !== undefined) {
        min += own;
        return `${own}px`;
      }
      if (c.key === "number") {
        // tabular digits of the panel's font: 1000 is never "1..."; room for the header's sort mark
        const w = Math.max(24, Math.ceil(p.digits * 7.6) + 2);
        min += w;
        return `${w}px`;
      }
      if (typeof c.width === "number") {
        min += c.width;
        return `${c.width}px`;
      }
      min += c.width.min;
      return `minmax(${c.width.min}px, ${c.width.fr}fr)`;
    });
    this.root.style.setProperty("--cols", cols.join(" "));
    this.root.style.setProperty("--row-min", `${min}px`);
  }

  private render(): void {
    const p = this.props;
    if (!p) return;
    for (const opt of Array.from(this.select.options)) {
      setText(opt, `${opt.value} (${p.counts[opt.value as Filter]})`);
    }
    if (this.select.value !== p.filter) this.select.value = p.filter;
    if (this.search.value !== p.text && document.activeElement !== this.search) this.search.value = p.text;
    setText(this.heads.get("metric")!.firstChild as HTMLElement, p.metricName);
    for (const [key, h] of this.heads) {
      setAttr(h, "aria-sort", p.sort.key === key ? (p.sort.desc ? "descending" : "ascending") : null);
    }
    this.layout(p);
    this.spacer.style.height = `${p.rows.length * ROW_HEIGHT}px`;
    this.empty.hidden = p.rows.length > 0;
    setText(this.empty, p.anyAtAll ? `No ${p.filter === "all" ? "" : `${p.filter} `}experiments${p.text ? ` with \u201c${p.text}\u201d` : ""}.`
      : "No experiments yet: start the loop to measure the baseline.");

    const w = visibleWindow(p.rows.length, this.viewport.scrollTop, this.rowsHeight(), ROW_HEIGHT, OVERSCAN);
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
      number: cell("c-num"), badge: el("span", { class: "badge verdict" }), review: el("span", { class: "review", hidden: true }),
      inFile: el("span", { class: "in-file", hidden: true }), metric: cell("c-metric"), delta: cell("c-delta"),
      sigma: cell("c-sigma"), description: cell("c-desc"), reason: cell("c-reason"), time: cell("c-time"),
      actions: el("span", { class: "row-actions" },
        el("button", { class: "secondary small", "data-act": "accept", title: "Accept: bring this change into your files" },
          el("span", { class: "glyph", "aria-hidden": "true" }, "\u2713"), el("span", { class: "label" }, "Accept")),
        el("button", { class: "secondary small", "data-act": "reject", title: "Reject: record that this change is not wanted" },
          el("span", { class: "glyph", "aria-hidden": "true" }, "\u2715"), el("span", { class: "label" }, "Reject"))),
      key: [],
    };
    r.root.append(r.number, el("span", { class: "c-status" }, r.badge, r.review, r.inFile), r.metric, r.delta, r.sigma,
      r.description, r.reason, r.time, r.actions);
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
    // the verdict is always the verdict; the review and the file's state are badges beside it
    setAttr(r.badge, "class", `badge verdict ${e.status}`);
    setText(r.badge, statusLabel(e));
    r.review.hidden = !e.review;
    setAttr(r.review, "class", `review ${e.review ?? ""}`);
    if (!r.review.firstChild) r.review.append(el("span", { class: "word" }));
    setText(r.review.firstChild as HTMLElement, e.review ?? "");
    setAttr(r.review, "title", reviewTitle(e));
    const inFile = inFileLabel(e);
    r.inFile.hidden = !inFile;
    setAttr(r.inFile, "class", `in-file ${e.inFile ?? ""}`);
    setText(r.inFile, inFile);
    setAttr(r.inFile, "title", inFile ? (e.inFile === "all" ? "Your files hold this change" : "Your files hold part of this change") : null);
    // "*": the run printed this number itself (no judge measured it: an autoresearch checkout)
    const own = e.selfReported === true && typeof e.metric === "number";
    setText(r.metric, fmtMetric(e.metric) + (own ? "*" : ""));
    setAttr(r.metric, "title", own ? "self-reported: the run's own printed summary, not measured by a judge" : null);
    setText(r.delta, fmtDelta(e.delta));
    setAttr(r.delta, "class", `c-delta ${deltaClass(e.delta, p.direction)}`);
    setText(r.sigma, fmtSigma(e.sigma));
    setText(r.description, e.baseline ? `${e.description || "baseline"}` : e.description);
    setAttr(r.description, "title", rowTitle(e));
    setText(r.reason, e.reason);
    setAttr(r.reason, "title", e.reason || null);
    setText(r.time, e.status === "running"
      ? live && live.stage !== "run" ? live.stage : live?.fraction != null ? `${Math.round(100 * live.fraction)}%` : "\u2026"
      : fmtDuration(e.durationS));
    r.actions.hidden = !(selected && canReview(e));
  }

  private startResize(ev: PointerEvent, key: SortKey, h: HTMLElement): void {
    ev.preventDefault();
    ev.stopPropagation();
    const grip = ev.target as HTMLElement;
    grip.setPointerCapture(ev.pointerId);
    const x0 = ev.clientX;
    const w0 = h.getBoundingClientRect().width;
    const base = { ...(this.props?.widths ?? {}) };
    const move = (e: PointerEvent) => {
      this.dragging = { ...base, [key]: Math.max(16, Math.round(w0 + e.clientX - x0)) };
      this.schedule();
    };
    const end = () => {
      grip.removeEventListener("pointermove", move);
      grip.removeEventListener("pointerup", end);
      grip.removeEventListener("pointercancel", end);
      const widths = this.dragging;
      this.dragging = null;
      if (widths) this.events.resize(widths);
    };
    grip.addEventListener("pointermove", move);
    grip.addEventListener("pointerup", end);
    grip.addEventListener("pointercancel", end);
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
    if (!p || ev.target !== this.viewport) return;
    const page = Math.max(1, Math.floor(this.rowsHeight() / ROW_HEIGHT) - 1);
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
