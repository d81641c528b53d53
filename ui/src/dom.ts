// DOM built from elements and text nodes only (never innerHTML): every datum from an API is text, so a seller
// name or an invoice description cannot inject markup (and the CSP forbids inline script besides).

export type Child = Node | string | number | null | undefined | false;
export type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") {
      el.addEventListener(key.replace(/^on/, ""), value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  append(el, children);
}

let statusTimer: number | undefined;

/** A message in the page's polite live region (read by screen readers), and visible until the next one. */
export function announce(message: string, kind: "info" | "error" = "info"): void {
  const status = document.getElementById("status");
  if (!status) return;
  status.className = `status ${kind}`;
  status.textContent = message;
  window.clearTimeout(statusTimer);
  if (kind === "info") statusTimer = window.setTimeout(() => (status.textContent = ""), 8000);
}

/** A labelled form field: the label is a real <label for>, so it is read out and clickable. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  control.id = id;
  const hintEl = hint ? h("small", { id: `${id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl);
}

export function table(headers: string[], rows: HTMLTableRowElement[], caption?: string): HTMLElement {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows),
    ),
  );
}

/** A row whose cells carry their column's name, which the narrow-screen layout shows beside each value. */
export function row(headers: string[], cells: (Child | Child[])[], attrs: Attrs = {}): HTMLTableRowElement {
  return h(
    "tr",
    attrs,
    cells.map((cell, i) => h("td", { "data-label": headers[i] ?? "" }, ...(Array.isArray(cell) ? cell : [cell]))),
  );
}

export function button(label: string, onclick: (ev: Event) => void, attrs: Attrs = {}): HTMLButtonElement {
  return h("button", { type: "button", ...attrs, onclick: onclick as EventListener }, label);
}

/** Render the current page again (the router listens for hash changes): after an action changed what it shows. */
export function reload(): void {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}

/** A refused call's message (the problem's detail) in the live region, as an error. */
export function fail(err: unknown): void {
  announce(err instanceof Error ? err.message : String(err), "error");
}
