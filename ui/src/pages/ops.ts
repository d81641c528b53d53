// The operators' dashboard: every service's health and event plumbing, every client context's KSeF state, and
// the hourly trend of KSeF calls and 429s (uPlot, vendored at build time).

import { get, post } from "../api.js";
import { button, fail, h, reload, row, table } from "../dom.js";
import { t } from "../i18n.js";
import { seconds, when } from "../format.js";
import type { Me } from "../session.js";

const SERVICES = ["auth", "gateway", "buffer", "approval", "notify"] as const;

type Json = Record<string, unknown>;

const num = (v: unknown): string => (v === null || v === undefined ? "—" : String(v));

export async function renderOps(main: HTMLElement, _user: Me): Promise<void> {
  main.append(h("h1", {}, t("ops.title")));
  const [health, messaging, letters, clients, calls, hooks] = await Promise.all([
    Promise.all(SERVICES.map((s) => get<Json>(`/${s}/readyz`).then((r) => String(r.status)).catch((e: Error) => `✕ ${e.message}`))),
    Promise.all(SERVICES.map((s) => get<Messaging>(`/${s}/ops/messaging`).catch(() => null))),
    Promise.all(SERVICES.map((s) => get<DeadLetter[]>(`/${s}/ops/dead-letters`, { limit: 20 }).catch(() => null))),
    get<Overview>("/gateway/ops/clients", { limit: 100 }).catch(() => null),
    get<{ hours: Point[] }>("/gateway/ops/ksef-calls", { hours: 24 }).catch(() => null),
    get<{ clients: WebhookHealth[] }>("/notify/ops/webhooks/clients").catch(() => null),
  ]);
  const webhooksOf = new Map((hooks?.clients ?? []).map((w) => [w.client_nip, w]));

  const hs = [t("ops.service"), t("ops.health"), t("ops.outbox"), t("ops.oldest"), t("ops.consumers"), t("ops.deadLetters")];
  main.append(
    h("h2", {}, t("ops.health")),
    table(hs, SERVICES.map((s, i) => {
      const m = messaging[i] as Messaging | null;
      const consumers = (m?.consumers ?? []).map(
        (c) => `${c.name}: ${c.processed}${c.lag !== null ? ` (lag ${c.lag})` : ""}${c.last_processed_at ? ` · ${when(c.last_processed_at)}` : ""}`,
      );
      return row(hs, [
        s,
        h("span", { class: health[i] === "ready" ? "tag ok" : "tag warn" }, health[i]),
        num(m?.outbox.pending),
        seconds(m?.outbox.oldest_pending_age_s ?? null),
        consumers.length ? h("ul", { class: "plain" }, consumers.map((c) => h("li", {}, c))) : "—",
        num(m?.dead_letters.pending),
      ], { "data-service": s });
    })),
  );

  const dl = SERVICES.flatMap((s, i) => (letters[i] ?? []).map((l) => [s, l] as const));
  const dh = [t("ops.service"), t("ledger.at"), t("ops.consumers"), t("buffer.reason"), t("common.actions")];
  main.append(
    h("h2", {}, t("ops.deadLetters")),
    dl.length
      ? table(dh, dl.map(([s, l]) => row(dh, [
          s,
          when(l.created_at),
          `${l.consumer} · ${l.topic} · ${l.attempts}×`,
          l.reason,
          l.replayed_at
            ? `${t("ops.replayed")} ${when(l.replayed_at)}`
            : button(t("ops.replay"), () => void post(`/${s}/ops/dead-letters/${l.id}/replay`).then(reload).catch(fail), { class: "small" }),
        ])))
      : h("p", {}, t("common.none")),
  );

  if (clients) {
    const open = clients.availability?.open ?? [];
    main.append(
      h("h2", {}, t("ops.clients")),
      h("p", {}, `${t("sales.availability")}: `, h("span", { class: open.length ? "tag warn" : "tag ok" }, open.length ? `${open.length} outage(s)` : "OK"), ` · ${when(clients.as_of)}`),
    );
    const ch = ["NIP", t("ops.lastSync"), t("ops.hwmLag"), "429 / 1 h", t("ops.budgetLeft"), t("ops.exports"), t("ops.sessions"), t("ops.stuck"), t("sales.offlineQueue"), t("ops.webhookFailures")];
    main.append(
      clients.items.length
        ? table(ch, clients.items.map((c) => {
            const subjects = c.sync.subjects.map((x) => `${x.subject_type}: ${x.outcome}${x.finished_at ? ` ${when(x.finished_at)}` : ""}${x.last_error ? ` — ${x.last_error}` : ""}`);
            const budget = c.ksef.budget_this_hour;
            const left = ["invoiceExport", "invoiceMetadata", "invoiceDownload"].filter((g) => budget[g]).map((g) => `${g.replace("invoice", "")} ${budget[g]!.remaining}/${budget[g]!.limit}`);
            return row(ch, [
              h("span", { class: "mono" }, c.client_nip),
              subjects.length ? h("ul", { class: "plain" }, subjects.map((x) => h("li", {}, x))) : "—",
              seconds(c.sync.max_lag_seconds),
              h("span", { class: c.ksef.rate_limited_last_hour ? "tag warn" : "" }, `${c.ksef.rate_limited_last_hour} / ${c.ksef.calls_last_hour}`),
              left.join(" · ") || "—",
              String(c.sync.exports_in_flight.length),
              `${c.sessions.authenticated ? "auth" : "—"} · ${c.sessions.online.length}`,
              String(c.sales.stuck_in_processing),
              `${c.sales.offline_queue}${c.sales.offline_nearest_deadline ? ` · ${when(c.sales.offline_nearest_deadline)}` : ""}`,
              webhookCell(webhooksOf.get(c.client_nip)),
            ], { "data-nip": c.client_nip });
          }))
        : h("p", {}, t("common.none")),
    );
  }
  if (calls) main.append(h("h2", {}, t("ops.calls")), await chart(calls.hours));
}

interface WebhookHealth {
  client_nip: string;
  failed: number;
  retrying: number;
  backlog: number;
  last_failure_at: string | null;
}

/** Given up / retrying / pending, and when the last attempt failed: a receiver of this client's events is failing. */
function webhookCell(w: WebhookHealth | undefined): HTMLElement | string {
  if (!w) return "0";
  return h(
    "span",
    { class: w.failed || w.retrying ? "tag warn" : "", "data-webhooks": `${w.failed}/${w.retrying}/${w.backlog}` },
    `${w.failed} / ${w.retrying} / ${w.backlog}${w.last_failure_at ? ` · ${when(w.last_failure_at)}` : ""}`,
  );
}

interface Messaging {
  service: string;
  outbox: { pending: number; oldest_pending_age_s: number | null; published_last_hour: number | null };
  consumers: { name: string; topic: string | null; processed: number; last_processed_at: string | null; lag: number | null }[];
  dead_letters: { pending: number };
}

interface DeadLetter {
  id: number;
  consumer: string;
  topic: string;
  reason: string;
  attempts: number;
  created_at: string;
  replayed_at: string | null;
}

interface ClientOverview {
  client_nip: string;
  sync: {
    subjects: { subject_type: string; outcome: string; finished_at: string | null; last_error: string | null }[];
    max_lag_seconds: number | null;
    exports_in_flight: unknown[];
  };
  ksef: {
    calls_last_hour: number;
    rate_limited_last_hour: number;
    budget_this_hour: Record<string, { limit: number; used: number; remaining: number }>;
  };
  sessions: { authenticated: boolean; online: unknown[] };
  sales: { stuck_in_processing: number; offline_queue: number; offline_nearest_deadline: string | null };
}

interface Overview {
  as_of: string;
  availability: { available: boolean; open: unknown[] } | null;
  items: ClientOverview[];
  next_cursor: string | null;
}

interface Point {
  start: string;
  calls: number;
  rate_limited: number;
}

async function chart(points: Point[]): Promise<HTMLElement> {
  if (!points.length) return h("p", {}, t("common.none"));
  const label = `${t("ops.calls")}: ${points.map((p) => `${p.start.slice(11, 16)} ${p.calls}/${p.rate_limited}`).join(", ")}`;
  const box = h("div", { class: "chart", role: "img", "aria-label": label });
  // The module is loaded only here: the other pages never pay for it.
  const path = "../../vendor/uPlot.esm.js";
  const { default: uPlot } = (await import(path)) as {
    default: new (opts: unknown, data: unknown, el: HTMLElement) => unknown;
  };
  new uPlot(
    {
      width: Math.min(900, window.innerWidth - 40),
      height: 220,
      series: [{}, { label: "calls", stroke: "#1f5fa8" }, { label: "429", stroke: "#b3261e" }],
    },
    [points.map((p) => Date.parse(p.start) / 1000), points.map((p) => p.calls), points.map((p) => p.rate_limited)],
    box,
  );
  return box;
}
