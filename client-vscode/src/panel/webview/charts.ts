/**
 * The panel's two uPlot charts: the live loss curve (the running experiment over the best one's) and
 * the progress chart (autoresearch's progress.png: kept and discarded metrics per experiment and the
 * kept frontier as a step line; crashes as red marks on the x axis). Colors come from the VS Code theme;
 * a theme change rebuilds the charts. Each chart says what it shows in data-* attributes (the webview
 * test reads them).
 * Must not import: vscode.
 */
import uPlot from "uplot";
import { lossRange, offRange, progressRange, type CurveSeries, type ProgressData } from "../model";
import { cssVar, el, setAttr, setText } from "./dom";

const HEIGHT = 140;

interface Theme {
  fg: string;
  muted: string;
  grid: string;
  font: string;
  green: string;
  red: string;
  blue: string;
  orange: string;
  purple: string;
  yellow: string;
}

function theme(): Theme {
  const fg = cssVar("--vscode-foreground", "#cccccc");
  const family = cssVar("--vscode-font-family", "system-ui, sans-serif");
  return {
    fg,
    muted: cssVar("--vscode-descriptionForeground", "#9d9d9d"),
    grid: cssVar("--vscode-editorWidget-border", cssVar("--vscode-panel-border", "rgba(128,128,128,0.35)")),
    font: `10px ${family}`,
    green: cssVar("--vscode-charts-green", "#89d185"),
    red: cssVar("--vscode-charts-red", "#f14c4c"),
    blue: cssVar("--vscode-charts-blue", "#3794ff"),
    orange: cssVar("--vscode-charts-orange", "#d18616"),
    purple: cssVar("--vscode-charts-purple", "#b180d7"),
    yellow: cssVar("--vscode-charts-yellow", "#cca700"),
  };
}

function axes(t: Theme, xLabel: (v: number) => string): uPlot.Axis[] {
  const common = { stroke: t.muted, font: t.font, grid: { stroke: t.grid, width: 1 }, ticks: { stroke: t.grid, width: 1, size: 3 } };
  return [
    { ...common, size: 22, values: (_u, vals) => vals.map(xLabel) },
    { ...common, size: 42, gap: 3, space: 18 },
  ];
}

/** A chart in a <figure>: a caption with a legend and a readout, the plot, and a line when empty. */
abstract class Chart<D> {
  readonly root: HTMLElement;
  protected readonly legend = el("span", { class: "legend" });
  protected readonly readout = el("span", { class: "readout" });
  protected readonly plot = el("div", { class: "plot" });
  protected readonly empty = el("div", { class: "chart-empty" });
  protected u: uPlot | null = null;
  protected data: D | null = null;
  protected t: Theme = theme();

  constructor(cls: string, title: string) {
    this.root = el("figure", { class: `chart ${cls}` },
      el("figcaption", {}, el("span", { class: "title" }, title), this.legend, this.readout), this.plot, this.empty);
    new ResizeObserver(() => this.resize()).observe(this.plot);
  }

  protected abstract build(): uPlot;
  protected abstract aligned(d: D): uPlot.AlignedData;

  set(d: D): void {
    this.data = d;
    if (!this.u) this.u = this.build();
    else this.u.setData(this.aligned(d));
  }

  /** New colors: the theme changed. */
  retheme(): void {
    this.t = theme();
    this.u?.destroy();
    this.u = null;
    if (this.data) this.set(this.data);
  }

  protected size(): { width: number; height: number } {
    return { width: Math.max(120, Math.floor(this.plot.clientWidth)), height: HEIGHT };
  }

  private resize(): void {
    if (!this.u) return;
    const s = this.size();
    if (s.width !== this.u.width || s.height !== this.u.height) this.u.setSize(s);
  }

  protected showReadout(u: uPlot, text: (idx: number) => string): void {
    const idx = u.cursor.idx;
    setText(this.readout, idx === null || idx === undefined ? "" : text(idx));
  }
}

export interface LiveCurve {
  curve: CurveSeries;
  /** the experiment the curves belong to (running, or the last one) */
  number: number | null;
  running: boolean;
  /** the line shown while there is no point */
  emptyText?: string;
}

/** A color for each of an experiment's runs: the main run blue, the repeats the next colors, smoke muted. */
function runColors(t: Theme, labels: string[], kinds: ("run" | "best")[]): string[] {
  const palette = [t.blue, t.orange, t.purple, t.yellow, t.fg];
  let k = 0;
  return labels.map((label, i) => kinds[i] === "best" ? t.green : / smoke$|^smoke$/.test(label) ? t.muted
    : palette[Math.min(palette.length - 1, k++)]);
}

/** Loss over steps for each run of an experiment, and the best's main run (dashed) for comparison. */
export class LossChart extends Chart<LiveCurve> {
  private yRange: [number, number] | null = null;
  private shape = "";

  constructor(cls = "loss", title = "Loss") {
    super(cls, title);
  }

  protected aligned(d: LiveCurve): uPlot.AlignedData {
    return d.curve.data as uPlot.AlignedData;
  }

  override set(d: LiveCurve): void {
    const shape = d.curve.labels.join("|") + "/" + d.curve.kinds.join("|");
    if (this.u && shape !== this.shape) {
      this.u.destroy(); // other series (a repeat started, the best arrived): new series and colors
      this.u = null;
    }
    this.shape = shape;
    this.yRange = lossRange(d.curve);
    super.set(d);
    const [x, ...ys] = d.curve.data;
    const points = (kind: "run" | "best") => ys.reduce((n, y, i) => n + (d.curve.kinds[i] === kind
      ? y.filter((v) => v !== null).length : 0), 0);
    setAttr(this.root, "data-running-points", String(points("run")));
    setAttr(this.root, "data-best-points", String(points("best")));
    setAttr(this.root, "data-series", String(ys.length));
    setAttr(this.root, "data-labels", d.curve.labels.join(","));
    setAttr(this.root, "data-x", "step");
    const colors = runColors(this.t, d.curve.labels, d.curve.kinds);
    // one key per drawn series: a legend never names a curve that is not there
    this.legend.replaceChildren(...d.curve.labels.map((label, i) => {
      const key = el("span", { class: `key ${d.curve.kinds[i]}` }, label + (i === 0 && d.running ? " running" : ""));
      key.style.setProperty("--key-color", colors[i]);
      return key;
    }));
    this.empty.hidden = x.length > 0;
    this.root.classList.toggle("is-empty", x.length === 0);
    setText(this.empty, d.emptyText ?? (d.number === null ? "The running experiment's loss appears here."
      : d.running ? "Waiting for the first loss\u2026" : "No loss recorded."));
  }

  protected build(): uPlot {
    const t = this.t;
    const d = this.data!;
    const colors = runColors(t, d.curve.labels, d.curve.kinds);
    const ax = axes(t, (v) => String(v));
    ax[0] = { ...ax[0], label: "step", labelSize: 12, labelFont: t.font, size: 18 };
    ax[1] = { ...ax[1], label: "loss", labelSize: 12, labelFont: t.font };
    const opts: uPlot.Options = {
      ...this.size(),
      legend: { show: false },
      cursor: { y: false, points: { size: 5 }, drag: { x: false, y: false } },
      scales: { x: { time: false }, y: { range: (_u, min, max) => this.yRange ?? uPlot.rangeNum(min, max, 0.1, true) } },
      axes: ax,
      series: [
        {},
        ...d.curve.labels.map((label, i) => d.curve.kinds[i] === "best"
          ? { label, stroke: colors[i], width: 1, dash: [4, 3], spanGaps: true, points: { show: false } }
          : { label, stroke: colors[i], width: 1.5, spanGaps: true, points: { show: false } }),
      ],
      hooks: {
        setCursor: [(u) => this.showReadout(u, (i) => {
          const labels = this.data?.curve.labels ?? [];
          const parts = [`step ${u.data[0][i]}`];
          for (let s = 1; s < u.data.length; s++) {
            const v = u.data[s][i];
            if (v != null) parts.push(`${labels[s - 1]} ${(v as number).toFixed(4)}`);
          }
          return parts.join("  ");
        })],
      },
    };
    return new uPlot(opts, this.aligned(d), this.plot);
  }
}

export class ProgressChart extends Chart<ProgressData> {
  private yRange: [number, number] | null = null;

  /** `select`: a click on the chart picks the experiment nearest the pointer. */
  constructor(private readonly select: (number: number) => void, private metricName = "val_bpb") {
    super("progress", "Progress");
  }

  /** Discards outside the range are left out here and drawn as marks on the edge. */
  protected aligned(d: ProgressData): uPlot.AlignedData {
    const r = this.yRange;
    const inside = r ? d.discarded.map((v) => (offRange(v, r) ? null : v)) : d.discarded;
    return [d.x, d.kept, inside, d.frontier];
  }

  setMetric(name: string): void {
    this.metricName = name;
  }

  override set(d: ProgressData): void {
    this.yRange = progressRange(d);
    super.set(d);
    const count = (a: (number | null)[]) => a.filter((v) => v !== null).length;
    setAttr(this.root, "data-kept", String(count(d.kept)));
    setAttr(this.root, "data-discarded", String(count(d.discarded)));
    setAttr(this.root, "data-frontier", String(count(d.frontier)));
    setAttr(this.root, "data-crashes", String(d.crashes.length));
    const r = this.yRange;
    setAttr(this.root, "data-edge-marks", String(d.discarded.filter((v) => offRange(v, r)).length));
    setAttr(this.root, "data-y-range", r ? `${r[0]},${r[1]}` : null);
    this.legend.replaceChildren(
      el("span", { class: "key kept" }, `kept ${count(d.kept)}`),
      el("span", { class: "key discarded" }, `discarded ${count(d.discarded)}`),
      d.crashes.length ? el("span", { class: "key crash" }, `crashed ${d.crashes.length}`) : "");
    this.empty.hidden = d.x.length > 0;
    this.root.classList.toggle("is-empty", d.x.length === 0);
    setText(this.empty, `Each finished experiment's ${this.metricName} appears here.`);
  }

  protected build(): uPlot {
    const t = this.t;
    const dots = (color: string, size: number) => ({
      stroke: color, fill: color, paths: () => null, points: { show: true, size, width: 1, stroke: color, fill: color },
    });
    const opts: uPlot.Options = {
      ...this.size(),
      legend: { show: false },
      cursor: { y: false, points: { size: 7 }, drag: { x: false, y: false } },
      scales: { x: { time: false }, y: { range: (_u, min, max) => this.yRange ?? uPlot.rangeNum(min, max, 0.1, true) } },
      axes: ((ax) => [{ ...ax[0], label: "experiment", labelSize: 12, labelFont: t.font, size: 18 },
        { ...ax[1], label: this.metricName, labelSize: 12, labelFont: t.font }])(
        axes(t, (v) => (Number.isInteger(v) ? String(v) : ""))),
      series: [
        {},
        { label: "kept", ...dots(t.green, 6) },
        { label: "discarded", ...dots(t.muted, 4) },
        { label: "frontier", stroke: t.green, width: 1.5, spanGaps: true, points: { show: false },
          paths: uPlot.paths.stepped!({ align: 1 }) },
      ],
      hooks: {
        draw: [(u) => this.drawMarks(u)],
        setCursor: [(u) => this.showReadout(u, (i) => {
          const d = this.data!;
          const v = d.kept[i] ?? d.discarded[i];
          const what = d.kept[i] != null ? "kept" : d.discarded[i] != null ? "discarded" : "crashed";
          return `#${d.x[i]} ${what}${v != null ? ` ${v.toFixed(6)}` : ""}`;
        })],
      },
    };
    const u = new uPlot(opts, this.aligned(this.data!), this.plot);
    u.over.classList.add("clickable");
    u.over.addEventListener("click", () => {
      const i = u.cursor.idx;
      const n = i === null || i === undefined ? undefined : this.data?.x[i];
      if (n !== undefined) this.select(n);
    });
    return u;
  }

  /** Crashes have no metric: a red cross on the x axis. A discard off the range: a gray triangle on the edge. */
  private drawMarks(u: uPlot): void {
    const d = this.data;
    if (!d) return;
    const ctx = u.ctx;
    const pr = devicePixelRatio || 1;
    const top = u.bbox.top;
    const bottom = u.bbox.top + u.bbox.height;
    const r = 3 * pr;
    ctx.save();
    ctx.strokeStyle = this.t.red;
    ctx.lineWidth = 1.5 * pr;
    for (const n of d.crashes) {
      const cx = u.valToPos(n, "x", true);
      ctx.beginPath();
      ctx.moveTo(cx - r, bottom - 2 * r - pr);
      ctx.lineTo(cx + r, bottom - pr);
      ctx.moveTo(cx + r, bottom - 2 * r - pr);
      ctx.lineTo(cx - r, bottom - pr);
      ctx.stroke();
    }
    const range = this.yRange;
    ctx.fillStyle = this.t.muted;
    for (let i = 0; range && i < d.x.length; i++) {
      const v = d.discarded[i];
      if (v === null || (v >= range[0] && v <= range[1])) continue;
      const cx = u.valToPos(d.x[i], "x", true);
      const up = v > range[1];
      const y = up ? top + pr : bottom - pr;
      ctx.beginPath();
      ctx.moveTo(cx, y);
      ctx.lineTo(cx - r, y + (up ? 2 * r : -2 * r));
      ctx.lineTo(cx + r, y + (up ? 2 * r : -2 * r));
      ctx.closePath();
      ctx.fill();
    }
    ctx.restore();
  }
}
