/**
 * The experiments table without a page: order (newest first, or by a column the user clicked), the
 * filters (status and words), the window of rows virtual scrolling renders, the keyboard's moves and
 * which rows may be reviewed. The webview's table.ts draws what this decides.
 * Must not import: vscode, the DOM.
 */
import type { ExperimentPayload, ExperimentStatus } from "../../../protocol/nightlab-protocol";
import type { SortKey, SortOrder } from "./messages";

export type Filter = ExperimentStatus | "all";
export const FILTERS: readonly Filter[] = ["all", "keep", "discard", "crash", "running", "interrupted"];
export const SORT_KEYS: readonly SortKey[] = ["number", "status", "metric", "delta", "sigma", "description", "reason", "time"];
export const DEFAULT_SORT: SortOrder = { key: "number", desc: true };

export function sortNewestFirst(experiments: readonly ExperimentPayload[]): ExperimentPayload[] {
  return [...experiments].sort((a, b) => b.number - a.number);
}

/** Insert or replace by number, keeping newest first (binary search: 5,000 rows stay cheap). */
export function upsert(list: readonly ExperimentPayload[], e: ExperimentPayload): ExperimentPayload[] {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].number > e.number) lo = mid + 1;
    else hi = mid;
  }
  const out = list.slice();
  if (lo < list.length && list[lo].number === e.number) out[lo] = e;
  else out.splice(lo, 0, e);
  return out;
}

/**
 * The rows a filter lets through: a status ("all": any) and words, each of which must be in the
 * description or the reason (case does not matter). The same array when nothing filters.
 */
export function filterRows(list: readonly ExperimentPayload[], filter: Filter, text = ""): readonly ExperimentPayload[] {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  if (filter === "all" && words.length === 0) return list;
  return list.filter((e) => {
    if (filter !== "all" && e.status !== filter) return false;
    if (!words.length) return true;
    const hay = `${e.description}\n${e.reason}`.toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}

export function countByStatus(list: readonly ExperimentPayload[]): Record<Filter, number> {
  const counts: Record<Filter, number> = { all: list.length, keep: 0, discard: 0, crash: 0, running: 0, interrupted: 0 };
  for (const e of list) counts[e.status] += 1;
  return counts;
}

function sortValue(e: ExperimentPayload, key: SortKey): number | string | null {
  const num = (v: number | null | undefined) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  switch (key) {
    case "number": return e.number;
    case "status": return e.status;
    case "metric": return num(e.metric);
    case "delta": return num(e.delta);
    case "sigma": return num(e.sigma);
    case "description": return e.description.toLowerCase() || null;
    case "reason": return e.reason.toLowerCase() || null;
    case "time": return num(e.durationS);
  }
}

/**
 * The rows in a column's order. Rows without a value (no metric yet, no reason) go last in both
 * directions; ties keep newest first. The newest-first order is the list itself (no copy).
 */
export function sortRows(list: readonly ExperimentPayload[], sort: SortOrder): readonly ExperimentPayload[] {
  if (sort.key === "number") return sort.desc ? list : [...list].reverse();
  const keyed = list.map((e) => ({ e, v: sortValue(e, sort.key) }));
  const sign = sort.desc ? -1 : 1;
  keyed.sort((a, b) => {
    if (a.v === null || b.v === null) return a.v === b.v ? b.e.number - a.e.number : a.v === null ? 1 : -1;
    const c = a.v < b.v ? -1 : a.v > b.v ? 1 : 0;
    return c !== 0 ? sign * c : b.e.number - a.e.number;
  });
  return keyed.map((k) => k.e);
}

/** A click on a column's header: that column (the number and the time newest/longest first, the rest ascending); again: the other way. */
export function nextSort(current: SortOrder, key: SortKey): SortOrder {
  if (current.key === key) return { key, desc: !current.desc };
  return { key, desc: key === "number" || key === "time" };
}

/** Characters the # column needs for the largest number (at least 2): four-digit numbers are not cut. */
export function numberDigits(list: readonly ExperimentPayload[]): number {
  let max = 0;
  for (const e of list) if (e.number > max) max = e.number;
  return Math.max(2, String(max).length);
}

export interface RowWindow {
  /** first row rendered */
  start: number;
  /** one past the last row rendered */
  end: number;
  /** where the first rendered row sits, in pixels from the top of the list */
  offset: number;
}

/**
 * The rows to render for a scroll position: the ones in view plus `overscan` on each side, clamped to
 * the list. A scrollTop past the end (the list shrank under a filter) shows the last rows.
 */
export function visibleWindow(total: number, scrollTop: number, viewport: number, rowHeight: number,
  overscan: number): RowWindow {
  if (total <= 0 || rowHeight <= 0) return { start: 0, end: 0, offset: 0 };
  const inView = Math.max(1, Math.ceil(Math.max(0, viewport) / rowHeight));
  const maxFirst = Math.max(0, total - inView);
  const first = Math.min(maxFirst, Math.max(0, Math.floor(scrollTop / rowHeight)));
  const start = Math.max(0, first - overscan);
  const end = Math.min(total, first + inView + 1 + overscan);
  return { start, end, offset: start * rowHeight };
}

/** The scrollTop that brings row `index` into view (unchanged when it is already). */
export function scrollToRow(index: number, scrollTop: number, viewport: number, rowHeight: number): number {
  const top = index * rowHeight;
  if (top < scrollTop) return top;
  if (top + rowHeight > scrollTop + viewport) return Math.max(0, top + rowHeight - viewport);
  return scrollTop;
}

/** The number the selection moves to with a key (delta rows; ±Infinity: first/last), or null. */
export function moveSelection(rows: readonly ExperimentPayload[], selected: number | null, delta: number): number | null {
  if (rows.length === 0) return null;
  const at = selected === null ? -1 : rows.findIndex((e) => e.number === selected);
  const from = at === -1 ? (delta > 0 ? -1 : rows.length) : at;
  const to = Math.min(rows.length - 1, Math.max(0, from + (Number.isFinite(delta) ? delta : delta > 0 ? rows.length : -rows.length)));
  return rows[to].number;
}

/** The row's Accept/Reject: a finished change, kept or discarded, not the baseline. */
export function canReview(e: ExperimentPayload): boolean {
  return (e.status === "keep" || e.status === "discard") && !e.baseline;
}

/** The detail view's Accept also takes a crash or an interrupted run's change (the host asks first). */
export function canAccept(e: ExperimentPayload): boolean {
  return e.status !== "running" && !e.baseline;
}

/** Verdicts whose change the loop did not keep: accepting one asks first. */
const NOT_KEPT: ReadonlySet<string> = new Set(["discard", "crash", "interrupted"]);

/**
 * The question before accepting a change the loop did not keep (commands.ts asks it in a modal, for an
 * accept from anywhere: the panel, a diff editor, a hunk's code lens), or null when none is needed.
 */
export function acceptWarning(e: Pick<ExperimentPayload, "number" | "status" | "reason"> | undefined): string | null {
  if (!e || !NOT_KEPT.has(e.status)) return null;
  const why = e.reason ? ` (${e.reason})` : "";
  return `Experiment #${e.number} was a ${e.status}${why}: the loop did not keep it. Bring its change into your files anyway?`;
}
