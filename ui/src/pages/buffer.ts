// The purchase buffer list, shared by the client's page and the office's client view: one row per invoice with
// the decision and description editable in place, a selection for bulk actions, and suggestions shown as
// suggestions (applied only by the button, never silently).

import { download, patch, post, text, get, type Query } from "../api.js";
import { announce, button, clear, fail, h, row, table } from "../dom.js";
import { type Key, pick, t } from "../i18n.js";
import { money } from "../format.js";

export type Decision = "unverified" | "book" | "dont_book";
export const DECISIONS: Decision[] = ["unverified", "book", "dont_book"];

export interface Entry {
  id: string;
  ksef_number: string;
  period: string;
  invoice_number: string;
  issue_date: string;
  seller: { nip: string | null; name: string | null };
  invoice_type: string;
  currency: string;
  gross_amount: string;
  decision: Decision;
  decision_label: Record<string, string>;
  description: string | null;
  decided_at: string | null;
  decided_by_side: string | null;
  suggestion: {
    decision: Decision;
    description: string | null;
    based_on_invoice_number: string;
    based_on_ksef_number: string;
  } | null;
  imported_at: string | null;
  archived_at: string | null;
  late_arrival: boolean;
  month_approved: boolean;
}

interface EntryPage {
  items: Entry[];
  next_cursor: string | null;
}

export interface Outcome {
  entry_id: string | null;
  ksef_number: string | null;
  result: string;
  code: string | null;
  message: string | null;
  reason: Record<string, string> | null;
}

export interface BufferOptions {
  nip: string;
  query: Query;
  /** The office changing a decision: an override (buffer-svc logs it so). */
  office: boolean;
  canDecide: boolean;
  /** Extra cells at the end of a row (the office's archive button). */
  extra?: (entry: Entry, refresh: () => void) => HTMLElement[];
  extraHeader?: string;
  onChange?: () => void;
}

export const decisionName = (d: Decision): string => t(`decision.${d}` as Key);

export class BufferList {
  readonly selected = new Set<string>();
  readonly root = h("div", { class: "buffer" });
  private entries: Entry[] = [];
  private next: string | null = null;
  private readonly body = h("div", {});
  private readonly count = h("span", { class: "count", "aria-live": "polite" });

  constructor(private readonly options: BufferOptions) {}

  /** New filters; the next ``load`` reads the first page with them. */
  setQuery(query: Query): void {
    this.options.query = query;
  }

  get headers(): string[] {
    const hs = [
      t("buffer.select"),
      t("buffer.date"),
      t("buffer.ksefNumber"),
      t("buffer.type"),
      t("buffer.number"),
      t("buffer.seller"),
      t("buffer.gross"),
      t("buffer.description"),
      t("buffer.decision"),
      t("common.actions"),
    ];
    if (this.options.extra) hs.push(this.options.extraHeader ?? "");
    return hs;
  }

  async load(): Promise<HTMLElement> {
    const page = await get<EntryPage>(`/buffer/clients/${this.options.nip}/purchases`, {
      limit: 100,
      ...this.options.query,
    });
    this.entries = page.items;
    this.next = page.next_cursor;
    this.selected.clear();
    this.render();
    clear(this.root, this.toolbar(), this.body);
    return this.root;
  }

  private async more(): Promise<void> {
    if (!this.next) return;
    const page = await get<EntryPage>(`/buffer/clients/${this.options.nip}/purchases`, {
      limit: 100,
      ...this.options.query,
      cursor: this.next,
    });
    this.entries.push(...page.items);
    this.next = page.next_cursor;
    this.render();
  }

  selectedIds(): string[] {
    return [...this.selected];
  }

  private toolbar(): HTMLElement {
    const description = h("input", { type: "text", maxlength: 1000, "aria-label": t("buffer.bulkDescription") });
    const bulk = (body: Record<string, unknown>) => async () => {
      if (!this.selected.size) return;
      const out = await post<{ changed: number; refused: number; results: Outcome[] }>(
        `/buffer/clients/${this.options.nip}/purchases/decisions`,
        { ...body, entry_ids: this.selectedIds() },
      );
      announce(`${t("buffer.saved")}: ${out.changed}` + (out.refused ? ` · ${t("buffer.reason")}: ${refusals(out.results)}` : ""));
      await this.load();
      this.options.onChange?.();
    };
    if (!this.options.canDecide) return h("div", { class: "toolbar" }, this.count);
    return h(
      "div",
      { class: "toolbar", role: "group", "aria-label": t("buffer.bulk") },
      this.count,
      h("span", {}, `${t("buffer.bulk")}:`),
      button(decisionName("book"), () => void bulk({ decision: "book" })(), { "data-bulk": "book" }),
      button(decisionName("dont_book"), () => void bulk({ decision: "dont_book" })(), { "data-bulk": "dont_book" }),
      description,
      button(t("buffer.bulkApply"), () => void bulk({ description: description.value })()),
    );
  }

  private render(): void {
    this.count.textContent = `${this.selected.size} ${t("buffer.selected")} / ${this.entries.length}`;
    if (!this.entries.length) {
      clear(this.body, h("p", { class: "empty" }, t("buffer.empty")));
      return;
    }
    const all = h("input", { type: "checkbox", "aria-label": t("buffer.selectAll") });
    all.checked = this.entries.every((e) => this.selected.has(e.id));
    all.addEventListener("change", () => {
      for (const e of this.entries) {
        if (all.checked) this.selected.add(e.id);
        else this.selected.delete(e.id);
      }
      this.render();
    });
    const headers = this.headers;
    const rows = this.entries.map((entry) => this.rowOf(entry, headers));
    clear(
      this.body,
      h("div", { class: "select-all" }, h("label", {}, all, " ", t("buffer.selectAll"))),
      table(headers, rows, t("buffer.title")),
      this.next ? button(t("common.more"), () => void this.more()) : null,
    );
  }

  private rowOf(entry: Entry, headers: string[]): HTMLTableRowElement {
    const locked = entry.month_approved && !this.options.office;
    const editable = this.options.canDecide && !locked && !entry.imported_at && !entry.archived_at;
    const label = entry.invoice_number;
    const check = h("input", { type: "checkbox", "aria-label": `${t("buffer.select")} ${label}` });
    check.checked = this.selected.has(entry.id);
    check.addEventListener("change", () => {
      if (check.checked) this.selected.add(entry.id);
      else this.selected.delete(entry.id);
      this.count.textContent = `${this.selected.size} ${t("buffer.selected")} / ${this.entries.length}`;
    });
    const decision = h(
      "select",
      { "aria-label": `${t("buffer.decision")} ${label}`, disabled: !editable, "data-decision": entry.id },
      DECISIONS.map((d) => h("option", { value: d, selected: d === entry.decision }, decisionName(d))),
    );
    decision.addEventListener("change", () => void this.save(entry, { decision: decision.value }));
    const description = h("input", {
      type: "text",
      maxlength: 1000,
      value: entry.description ?? "",
      disabled: !editable,
      "aria-label": `${t("buffer.description")} ${label}`,
      "data-description": entry.id,
    });
    description.addEventListener("change", () => void this.save(entry, { description: description.value }));
    const decisionCell: (Node | string)[] = [decision];
    if (entry.decided_by_side === "office" && !this.options.office) decisionCell.push(h("small", { class: "hint" }, "✎ biuro/office"));
    if (entry.suggestion && entry.decision === "unverified") {
      const s = entry.suggestion;
      decisionCell.push(
        h(
          "div",
          { class: "suggestion", "data-suggestion": entry.id },
          h("span", {}, `${t("buffer.suggestion")}: ${decisionName(s.decision)}`),
          s.description ? h("span", {}, ` · „${s.description}”`) : null,
          h("small", { class: "hint" }, ` (${t("buffer.suggestionBasis")} ${s.based_on_invoice_number})`),
          editable
            ? button(t("buffer.useSuggestion"), () =>
                void this.save(entry, { decision: s.decision, description: s.description ?? entry.description }),
              { class: "small", "aria-label": `${t("buffer.useSuggestion")} ${label}` })
            : null,
        ),
      );
    }
    const tags: HTMLElement[] = [];
    if (entry.late_arrival) tags.push(h("span", { class: "tag warn" }, t("buffer.lateArrivals")));
    if (entry.imported_at) tags.push(h("span", { class: "tag ok" }, t("buffer.imported")));
    if (entry.archived_at) tags.push(h("span", { class: "tag" }, t("buffer.archived")));
    const cells: (Node | string | (Node | string)[])[] = [
      check,
      entry.issue_date,
      h("span", { class: "mono" }, entry.ksef_number),
      entry.invoice_type,
      [entry.invoice_number, ...tags],
      [entry.seller.name ?? "—", h("br"), h("small", { class: "mono" }, entry.seller.nip ?? "")],
      h("span", { class: "num" }, money(entry.gross_amount, entry.currency)),
      description,
      decisionCell,
      [
        button(t("buffer.preview"), () => void preview(this.options.nip, entry), { class: "small", "aria-label": `${t("buffer.preview")} ${label}` }),
        button(t("buffer.xml"), () =>
          void download(`/buffer/clients/${this.options.nip}/purchases/${entry.id}/xml`, `${entry.ksef_number}.xml`),
        { class: "small", "aria-label": `${t("buffer.xml")} ${label}` }),
      ],
    ];
    if (this.options.extra) cells.push(this.options.extra(entry, () => void this.load()));
    return row(headers, cells, { "data-entry": entry.id, "data-ksef": entry.ksef_number });
  }

  private async save(entry: Entry, body: Record<string, unknown>): Promise<void> {
    try {
      const updated = await patch<Entry>(`/buffer/clients/${this.options.nip}/purchases/${entry.id}`, body);
      const i = this.entries.findIndex((e) => e.id === entry.id);
      if (i >= 0) this.entries[i] = updated;
      this.render();
      announce(`${t("buffer.saved")}: ${updated.invoice_number} — ${pick(updated.decision_label)}`);
      this.options.onChange?.();
    } catch (err) {
      fail(err);
      this.render();
    }
  }
}

export function refusals(results: Outcome[]): string {
  return results
    .filter((r) => r.result === "refused" || r.result === "not_found")
    .map((r) => `${r.ksef_number ?? r.entry_id}: ${pick(r.reason, r.message ?? r.code ?? "")}`)
    .join("; ");
}

/** The invoice as buffer-svc renders it, in a sandboxed frame (no scripts, no same-origin access). */
async function preview(nip: string, entry: Entry): Promise<void> {
  const html = await text(`/buffer/clients/${nip}/purchases/${entry.id}/preview`, {
    lang: document.documentElement.lang === "en" ? "en" : "pl",
  });
  const frame = h("iframe", { sandbox: "", title: `${t("buffer.preview")} ${entry.invoice_number}`, class: "preview" });
  frame.srcdoc = html;
  const dialog = h(
    "dialog",
    { "aria-label": `${t("buffer.preview")} ${entry.invoice_number}` },
    h("div", { class: "dialog-head" }, h("h2", {}, entry.invoice_number), button(t("common.close"), () => dialog.close())),
    frame,
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}
