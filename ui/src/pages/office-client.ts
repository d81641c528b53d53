// The office's view of one client: its buffer behind the booking gate, its sales invoices in KSeF, its KSeF access
// and sync, and the communication log ("Rejestr komunikacji").

import { download, get, objectUrl, post, put } from "../api.js";
import { announce, button, fail, field, h, reload, row, table } from "../dom.js";
import { type Key, pick, t } from "../i18n.js";
import { money, seconds, when } from "../format.js";
import { type Me, can } from "../session.js";
import { BufferList, DECISIONS, decisionName, type Outcome } from "./buffer.js";

const TABS = ["buffer", "sales", "ksef", "log"] as const;
type Tab = (typeof TABS)[number];

export async function renderOfficeClient(main: HTMLElement, user: Me, [nip, chosen]: string[]): Promise<void> {
  const tab = (chosen ?? "buffer") as Tab;
  main.append(
    h("h1", {}, `${t("clients.client")} ${nip}`),
    h(
      "nav",
      { class: "tabs", "aria-label": t("clients.client") },
      h("ul", {}, TABS.map((x) => h("li", {}, h("a", { href: `#/office/client/${nip}/${x}`, "aria-current": x === tab ? "page" : null }, t(`client.tab.${x}` as Key))))),
    ),
  );
  const render = { buffer: officeBuffer, sales, ksef, log }[tab];
  main.append(await render(nip, user));
}

interface MonthSummary {
  period: string;
  entries: number;
  approved: boolean;
  late_arrivals: number;
}

async function officeBuffer(nip: string, user: Me): Promise<HTMLElement> {
  const months = await get<MonthSummary[]>(`/buffer/clients/${nip}/months`);
  const root = h("section", { "aria-label": t("client.tab.buffer") });
  const period = h("select", { name: "period" }, h("option", { value: "" }, t("common.all")), months.map((m, i) =>
    h("option", { value: m.period, selected: i === 0 }, `${m.period}${m.approved ? ` — ${t("buffer.approved")}` : ""} (${m.entries})`)));
  const decision = h("select", { name: "decision" }, h("option", { value: "" }, t("common.all")), DECISIONS.map((d) => h("option", { value: d }, decisionName(d))));
  const seller = h("input", { type: "text", name: "seller", inputmode: "numeric", maxlength: 10 });
  const grossMin = h("input", { type: "number", name: "gross_min", step: "0.01", min: "0" });
  const grossMax = h("input", { type: "number", name: "gross_max", step: "0.01", min: "0" });
  const q = h("input", { type: "search", name: "q", maxlength: 200 });
  const imported = h("select", { name: "imported" }, h("option", { value: "" }, t("common.all")), h("option", { value: "false" }, t("buffer.notImported")), h("option", { value: "true" }, t("buffer.onlyImported")));
  const archived = h("input", { type: "checkbox", name: "archived" });
  const query = () => ({
    period: period.value,
    decision: decision.value,
    seller: seller.value.trim(),
    gross_min: grossMin.value,
    gross_max: grossMax.value,
    q: q.value.trim(),
    imported: imported.value,
    archived: archived.checked ? "true" : "",
  });
  const report = h("div", { class: "gate-report", "aria-live": "polite" });
  const list: BufferList = new BufferList({
    nip,
    query: query(),
    office: true,
    canDecide: can(user, "buffer.decide"),
    extraHeader: t("buffer.archived"),
    extra: (entry, refresh) => {
      if (entry.archived_at) return [button(t("buffer.restore"), () => void post(`/buffer/clients/${nip}/purchases/${entry.id}/restore`).then(refresh).catch(fail), { class: "small" })];
      if (entry.decision === "dont_book" && !entry.imported_at) return [button(t("buffer.archive"), () => void post(`/buffer/clients/${nip}/purchases/${entry.id}/archive`).then(refresh).catch(fail), { class: "small" })];
      return [];
    },
  });
  const filters = h(
    "form",
    { class: "filters", role: "search" },
    field(t("buffer.month"), period),
    field(t("buffer.decision"), decision),
    field(t("buffer.sellerNip"), seller),
    field(t("buffer.grossMin"), grossMin),
    field(t("buffer.grossMax"), grossMax),
    field(t("buffer.search"), q),
    field(t("buffer.importedFilter"), imported),
    h("div", { class: "field" }, h("label", {}, archived, " ", t("buffer.archived"))),
    h("button", { type: "submit" }, t("common.filter")),
  );
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    list.setQuery(query());
    void list.load();
  });
  const importSelected = async () => {
    const ids = list.selectedIds();
    if (!ids.length) return;
    const out = await post<{ results: Outcome[]; changed: number; refused: number }>(`/buffer/clients/${nip}/purchases/imports`, { entry_ids: ids, ksef_numbers: [] });
    const headers = [t("buffer.ksefNumber"), t("buffer.result"), t("buffer.reason")];
    report.replaceChildren(
      h("h2", {}, t("buffer.gateReport")),
      table(headers, out.results.map((r) => row(headers, [h("span", { class: "mono" }, r.ksef_number ?? r.entry_id ?? ""), r.result, pick(r.reason, r.message ?? "")], { "data-result": r.result }))),
    );
    announce(`${t("buffer.gateReport")}: ${out.changed} / ${out.refused}`);
    await list.load();
  };
  // The bundle's progress is the bytes so far (of the total when the server sent a Content-Length).
  const bundleProgress = h("span", { "aria-live": "polite", "data-progress": "zip" });
  const bundle = async () => {
    const bar = h("progress", { id: "zip-progress" });
    const label = h("label", { for: "zip-progress" }, t("buffer.zipRunning"));
    bundleProgress.replaceChildren(label, " ", bar);
    let size = 0;
    await download(`/buffer/clients/${nip}/ready.zip`, `ksef-${nip}-${period.value || "all"}.zip`, { period: period.value }, (received, total) => {
      size = received;
      label.textContent = `${t("buffer.zipRunning")}: ${kilobytes(received)}${total ? ` / ${kilobytes(total)}` : ""}`;
      if (total) Object.assign(bar, { max: total, value: received });
    });
    bundleProgress.replaceChildren(`${t("buffer.zipDone")} (${kilobytes(size)})`);
  };
  const exports = h(
    "div",
    { class: "toolbar" },
    can(user, "buffer.import") ? button(t("buffer.import"), () => void importSelected().catch(fail), { class: "primary" }) : null,
    button(t("buffer.csv"), () => void download(`/buffer/clients/${nip}/ready.csv`, `ready-${nip}-${period.value || "all"}.csv`, { period: period.value })),
    button(t("buffer.json"), () => void download(`/buffer/clients/${nip}/ready`, `ready-${nip}-${period.value || "all"}.json`, { period: period.value })),
    button(t("buffer.zip"), () => void bundle().catch(fail), { "data-download": "zip" }),
    bundleProgress,
  );
  root.append(filters, h("p", { class: "hint" }, t("buffer.override")), exports, report, await list.load());
  return root;
}

interface SalesInvoice {
  id: string;
  status: string;
  status_label: Record<string, string>;
  invoice_number: string;
  issue_date: string;
  buyer_nip: string | null;
  currency: string;
  gross_amount: string;
  ksef_number: string | null;
  ksef_code: number | string | null;
  error: { description?: string; details?: string[] } | null;
  has_upo: boolean;
  offline_mode: string | null;
  offline_deadline: string | null;
  offline_deadline_status: string | null;
  held_by_rule: string | null;
}

async function sales(nip: string, user: Me): Promise<HTMLElement> {
  const [page, availability] = await Promise.all([
    get<{ items: SalesInvoice[]; next_cursor: string | null }>(`/gateway/clients/${nip}/sales`, { limit: 100 }),
    get<{ available: boolean; open: unknown[] }>("/gateway/ksef/availability").catch(() => null),
  ]);
  const base = `/gateway/clients/${nip}/sales`;
  const qr = h("div", { class: "qr", "aria-live": "polite" });
  const showQr = async (inv: SalesInvoice, which: "kod-i" | "kod-ii") => {
    const url = await objectUrl(`${base}/${inv.id}/${which}.png`);
    qr.replaceChildren(h("figure", {}, h("img", { src: url, alt: `${which === "kod-i" ? "KOD I" : "KOD II"} ${inv.invoice_number}`, width: 220 }), h("figcaption", {}, `${inv.invoice_number} ${inv.ksef_number ?? "OFFLINE"}`)));
  };
  const headers = [t("buffer.number"), t("buffer.date"), t("sales.status"), t("buffer.ksefNumber"), t("buffer.gross"), t("sales.deadline"), t("common.actions")];
  const rows = page.items.map((inv) =>
    row(headers, [
      inv.invoice_number,
      inv.issue_date,
      [h("span", { class: `tag sales-${inv.status}` }, pick(inv.status_label, inv.status)), inv.error ? h("small", { class: "hint" }, ` ${inv.ksef_code ?? ""} ${inv.error.description ?? ""} ${(inv.error.details ?? []).join(" ")}`) : null, inv.held_by_rule ? h("small", { class: "hint" }, ` (${inv.held_by_rule})`) : null],
      h("span", { class: "mono" }, inv.ksef_number ?? "—"),
      h("span", { class: "num" }, money(inv.gross_amount, inv.currency)),
      inv.offline_deadline ? [when(inv.offline_deadline), inv.offline_deadline_status ? h("small", { class: "hint" }, ` ${inv.offline_deadline_status}`) : null] : "—",
      [
        inv.has_upo ? button(t("sales.upo"), () => void download(`${base}/${inv.id}/upo`, `UPO-${inv.ksef_number}.xml`), { class: "small" }) : null,
        button(t("sales.kod1"), () => void showQr(inv, "kod-i"), { class: "small", "aria-label": `${t("sales.kod1")} ${inv.invoice_number}` }),
        inv.offline_mode ? button(t("sales.kod2"), () => void showQr(inv, "kod-ii"), { class: "small" }) : null,
        inv.status === "held" && can(user, "ksef.send") ? button(t("sales.send"), () => void post(`${base}/${inv.id}/send`).then(reload).catch(fail), { class: "small" }) : null,
      ],
    ]),
  );
  const offline = page.items.filter((i) => i.offline_deadline && !["accepted", "duplicate"].includes(i.status));
  const month = h("input", { type: "month", value: new Date().toISOString().slice(0, 7), "aria-label": t("buffer.month") });
  const progress = h("div", { "aria-live": "polite" });
  // A backfill releases the month's held invoices into the queue; its progress is the share of them with a final
  // KSeF status, read again until none is left in flight (or the page is left).
  const backfill = async () => {
    const out = await post<{ released: number }>(`/gateway/clients/${nip}/sales-backfill`, undefined, { month: month.value });
    const watch = async () => {
      const now = await get<{ items: SalesInvoice[] }>(base, { limit: 100 });
      const ofMonth = now.items.filter((i) => i.issue_date.startsWith(month.value) && i.status !== "held");
      const inFlight = ofMonth.filter((i) => ["queued", "sending", "submitted"].includes(i.status)).length;
      progress.replaceChildren(
        h("label", { for: "backfill-progress" }, `${t("sales.backfill")}: ${out.released} · ${ofMonth.length - inFlight}/${ofMonth.length}`),
        " ",
        h("progress", { id: "backfill-progress", max: Math.max(ofMonth.length, 1), value: ofMonth.length - inFlight }),
      );
      if (inFlight && progress.isConnected) window.setTimeout(() => void watch(), 1500);
    };
    await watch();
  };
  return h(
    "section",
    { "aria-label": t("sales.title") },
    h("h2", {}, t("sales.title")),
    can(user, "ksef.send")
      ? h("div", { class: "toolbar" }, month, button(t("sales.backfill"), () => void backfill().catch(fail)), progress)
      : null,
    availability ? h("p", {}, `${t("sales.availability")}: `, h("span", { class: availability.available ? "tag ok" : "tag warn" }, availability.available ? "OK" : "offline")) : null,
    h("p", {}, `${t("sales.offlineQueue")}: ${offline.length}`),
    rows.length ? table(headers, rows) : h("p", {}, t("common.none")),
    qr,
  );
}

interface Credential {
  kind: string;
  status: string;
  valid_until: string | null;
  last_successful_auth: string | null;
  last_error: string | null;
  token_reference: string | null;
  updated_at: string;
}

interface Subject {
  subject_type: string;
  running: boolean;
  hwm: string | null;
  lag_seconds: number | null;
  last_run_at: string | null;
  next_run_at: string | null;
  invoices_last_run: number | null;
  last_error: string | null;
  export_in_flight: { reference_number: string; started_at: string } | null;
}

interface SyncView {
  credential_active: boolean;
  invoices_stored: number;
  fetch_requested_at: string | null;
  subjects: Subject[];
  budget: Record<string, unknown> | null;
}

export async function ksef(nip: string, user: Me): Promise<HTMLElement> {
  const root = h("section", { "aria-label": t("client.tab.ksef") });
  const credential = await get<Credential>(`/gateway/clients/${nip}/credential`).catch(() => null);
  const delegation = await get<{ mode: string; state: string; verified_at: string | null; checked_at: string | null; check_error: string | null }>(`/gateway/clients/${nip}/delegation`).catch(() => null);
  root.append(
    h("h2", {}, t("ksef.credential")),
    credential
      ? h("dl", { class: "facts" },
          h("dt", {}, t("common.state")), h("dd", {}, `${credential.kind} · ${credential.status}${credential.token_reference ? ` · ${credential.token_reference}` : ""}`),
          h("dt", {}, t("ksef.verified")), h("dd", {}, when(credential.last_successful_auth)),
          h("dt", {}, t("ksef.expires")), h("dd", {}, when(credential.valid_until)),
          credential.last_error ? [h("dt", {}, t("ksef.lastError")), h("dd", {}, credential.last_error)] : [])
      : h("p", {}, t("ksef.noCredential")),
  );
  if (can(user, "ksef.credentials.manage")) {
    const token = h("input", { type: "password", autocomplete: "off", maxlength: 512, required: true });
    const form = h("form", { class: "inline" }, field(t("ksef.token"), token), h("button", { type: "submit" }, t("ksef.registerToken")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      put(`/gateway/clients/${nip}/credential`, { kind: "ksef_token", token: token.value.trim() })
        .then(reload)
        .catch(fail);
    });
    root.append(form);
  }
  if (delegation) {
    root.append(
      h("h2", {}, t("ksef.delegation")),
      h("p", {}, `${delegation.mode} · ${delegation.state} · ${t("ksef.verified")}: ${when(delegation.verified_at)}${delegation.check_error ? ` · ${delegation.check_error}` : ""}`),
      button(t("ksef.check"), () => void post(`/gateway/clients/${nip}/delegation/check`).then(reload).catch(fail)),
    );
  }
  const syncBox = h("div", { "aria-live": "polite" });
  root.append(h("h2", {}, t("ksef.sync")), syncBox);
  let timer: number | undefined;
  const show = async () => {
    const view = await get<SyncView>(`/gateway/clients/${nip}/sync`);
    const running = view.subjects.some((s) => s.running || s.export_in_flight) || view.fetch_requested_at !== null;
    const headers = ["", t("ksef.hwm"), t("ksef.lastRun"), t("ksef.nextRun"), t("ksef.lastError")];
    syncBox.replaceChildren(
      h("p", {}, `${view.invoices_stored} · ${t("ksef.budget")}: ${budgetText(view.budget)}`),
      running ? h("p", {}, h("label", { for: "sync-progress" }, t("ksef.syncRunning")), " ", h("progress", { id: "sync-progress" })) : "",
      table(headers, view.subjects.map((s) => row(headers, [s.subject_type, `${when(s.hwm)} (${seconds(s.lag_seconds)})`, `${when(s.last_run_at)}${s.invoices_last_run !== null ? ` · ${s.invoices_last_run}` : ""}`, when(s.next_run_at), s.last_error ?? "—"]))),
      button(t("ksef.fetchNow"), () => void post(`/gateway/clients/${nip}/sync/fetch-now`).then(show).catch(fail)),
    );
    window.clearTimeout(timer);
    // Progress of a long first sync or export: read again while it runs, stopped when the page is left.
    if (running && syncBox.isConnected) timer = window.setTimeout(() => void show(), 2000);
  };
  await show();
  window.addEventListener("hashchange", () => window.clearTimeout(timer), { once: true });
  return root;
}

/** "invoiceExport 18/18 · invoiceMetadata 18/18 · …": what is left of each KSeF limit group this hour. */
export function budgetText(budget: Record<string, unknown> | null): string {
  if (!budget) return "—";
  return Object.entries(budget)
    .map(([group, value]) => {
      const hour = (value as { windows?: Record<string, { remaining: number; limit: number }> }).windows?.per_hour;
      return hour ? `${group} ${hour.remaining}/${hour.limit}` : group;
    })
    .join(" · ");
}

interface LogLine {
  id: number;
  at: string;
  kind: string;
  ksef_number: string | null;
  actor: string | null;
  actor_side: string | null;
  detail: Record<string, unknown>;
}

async function log(nip: string): Promise<HTMLElement> {
  const page = await get<{ items: LogLine[]; next_after: number | null }>(`/buffer/clients/${nip}/communication-log`, { limit: 500 });
  const headers = [t("ledger.at"), t("log.kind"), t("buffer.ksefNumber"), t("log.actor"), t("log.detail")];
  const rows = page.items.slice().reverse().map((l) => row(headers, [when(l.at), l.kind, h("span", { class: "mono" }, l.ksef_number ?? ""), `${l.actor_side ?? ""} ${l.actor ?? ""}`, JSON.stringify(l.detail)]));
  return h(
    "section",
    { "aria-label": t("log.title") },
    h("h2", {}, t("log.title")),
    button(`CSV — ${t("common.download")}`, () => void download(`/buffer/clients/${nip}/communication-log.csv`, `rejestr-${nip}.csv`)),
    rows.length ? table(headers, rows) : h("p", {}, t("common.none")),
  );
}

/** The client's own page of its KSeF credential and sync (the consent page sends a client that chose a token here). */
export async function renderClientKsef(main: HTMLElement, user: Me): Promise<void> {
  main.append(h("h1", {}, t("client.tab.ksef")), await ksef(user.context.nips[0] ?? "", user));
}

const kilobytes = (bytes: number): string => `${(bytes / 1024).toLocaleString(undefined, { maximumFractionDigits: 1 })} kB`;
