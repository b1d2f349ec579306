/**
 * The panel webview's HTML: a document with a strict Content-Security-Policy that loads one stylesheet
 * and one script (dist/webview.css, dist/webview.js) and nothing else: no inline script or handler, no
 * network. The script builds the panel. The host's provider and the webview test both render the page
 * with this function, so the test runs under the real policy.
 * Must not import: vscode, the DOM, node: modules (the unit tests bundle it for Node, the test for a page).
 */

export interface HtmlParams {
  /** webview.asWebviewUri(dist/webview.js) */
  scriptUri: string;
  /** webview.asWebviewUri(dist/webview.css) */
  styleUri: string;
  /** webview.cspSource */
  cspSource: string;
  /** makeNonce(), new for each render */
  nonce: string;
}

export function renderHtml({ scriptUri, styleUri, cspSource, nonce }: HtmlParams): string {
  const csp = [
    "default-src 'none'",
    `img-src ${cspSource} data:`,
    `style-src ${cspSource} 'nonce-${nonce}'`,
    `font-src ${cspSource}`,
    `script-src 'nonce-${nonce}'`,
  ].join("; ") + ";";
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${attr(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" nonce="${attr(nonce)}" href="${attr(styleUri)}">
<title>Nightlab</title>
</head>
<body>
<main id="app" aria-busy="true"><p class="loading">Loading experiments\u2026</p></main>
<script nonce="${attr(nonce)}" src="${attr(scriptUri)}"></script>
</body>
</html>
`;
}

const NONCE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** 32 characters from a cryptographic random source (Web Crypto: Node 20 and browsers have it). */
export function makeNonce(): string {
  const bytes = new Uint8Array(32);
  globalThis.crypto.getRandomValues(bytes);
  // 62 letters: a byte modulo 62 is slightly uneven, drop the bytes above the last whole multiple
  let out = "";
  while (out.length < 32) {
    for (const b of bytes) {
      if (b < 248 && out.length < 32) out += NONCE_CHARS[b % 62];
    }
    globalThis.crypto.getRandomValues(bytes);
  }
  return out;
}

function attr(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
