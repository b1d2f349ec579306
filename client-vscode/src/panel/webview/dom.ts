/**
 * Small DOM helpers for the webview: building elements without innerHTML (the CSP forbids inline
 * styles and handlers, and text from the ledger must never become markup) and reading theme colors.
 * Must not import: vscode.
 */

type Attrs = Record<string, string | number | boolean | null | undefined>;

/** An element with attributes (class, data-*, aria-*, ...; false/null/undefined leave one out) and children. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {},
  ...children: (Node | string | null | undefined)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** Set text only when it changed: the rows are rewritten often and most cells stay the same. */
export function setText(e: Element, text: string): void {
  if (e.textContent !== text) e.textContent = text;
}

export function setAttr(e: Element, name: string, value: string | null): void {
  if (value === null) {
    if (e.hasAttribute(name)) e.removeAttribute(name);
  } else if (e.getAttribute(name) !== value) {
    e.setAttribute(name, value);
  }
}

/** A theme variable's value (VS Code sets them on <html>), or the fallback when the theme lacks it. */
export function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

/** Calls `f` when VS Code switches the theme: it rewrites <html>'s style and <body>'s class. */
export function onThemeChange(f: () => void): void {
  let pending = false;
  const obs = new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      f();
    });
  });
  obs.observe(document.documentElement, { attributes: true, attributeFilter: ["style", "class"] });
  obs.observe(document.body, { attributes: true, attributeFilter: ["class"] });
}
