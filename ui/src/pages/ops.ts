// The operators' dashboard: every service's health and event plumbing, every client context's KSeF state, and
// the hourly trend of KSeF calls and 429s (uPlot, vendored at build time).

import { get, post } from "../api.js";
import { announce, button, h, row, table } from "../dom.js";
import { t } from "../i18n.js";
import { seconds, when } from "../format.js";
import type { Me } from "../session.js";

const SERVICES = ["auth", "gateway", "buffer", "approval", "notify"] as const;

type Json = Record<string, unknown>;

const num = (v: unknown): string => (v === null || v === undefined ? "—" : String(v));

export async function renderOps(main: HTMLElement, _user: Me): Promise<void> {
  main.append(h("h1", {}, t("ops.title")));
  const [health, messaging, letters, clients, calls] = await Promise.all([
    Promise.all(SERVICES.map((s) => get<Json>(`/${s}/readyz`).then((r) => String(r.status)).catch((e: Error) => `✕ ${e.message}`))),
    Promise.all(SERVICES.map((s) => get<Json>(`/${s}/ops/messaging`).catch(() => null))),
    Promise.all(SERVICES.map((s) => get<Json>(`/${s}/ops/dead-letters`, { limit: 20 }).catch(() => null))),
    get<Json>("/gateway/ops/clients", { limit: 200 }).catch(() => null),
    get<Json>("/gateway/ops/ksef-calls", { hours: 24 }).catch(() => null),
  ]);

  const hs = [t("ops.service"), t("ops.health"), t("ops.outbox"), t("ops.oldest"), t("ops.consumers"), t("ops.deadLetters")];
  main.append(
    h("h2", {}, t("ops.health")),
    table(hs, SERVICES.map((s, i) => {
      const m = messaging[i] as Json | null;
      const outbox = (m?.outbox ?? {}) as Json;
      const consumers = ((m?.consumers ?? []) as Json[]).map((c) => `${String(c.name)}: ${num(c.processed)}${c.lag_s !== undefined || c.lagS !== undefined ? ` (lag ${seconds((c.lag_s ?? c.lagS) as number)})` : ""}`);
      const dead = (m?.dead_letters ?? m?.deadLetters ?? {}) as Json;
      return row(hs, [s, h("span", { class: health[i] === "ready" ? "tag ok" : "tag warn" }, health[i]), num(outbox.pending), seconds((outbox.oldest_pending_age_s ?? outbox.oldestPendingAgeS) as number | null), consumers.join(" · ") || "—", num(dead.pending)]);
    })),
  );

  const dl = SERVICES.flatMap((s, i) => {
    const page = letters[i] as Json | null;
    const items = (Array.isArray(page) ? page : ((page?.items ?? []) as Json[])) as Json[];
    return items.map((l) => [s, l] as const);
  });
  const dh = [t("ops.service"), t("ledger.at"), "topic", t("buffer.reason"), t("common.actions")];
  main.append(
    h("h2", {}, t("ops.deadLetters")),
    dl.length
      ? table(dh, dl.map(([s, l]) => row(dh, [s, when(String(l.created_at ?? l.createdAt ?? "")), `${String(l.topic)} · ${String(l.consumer ?? l.subscription ?? "")}`, String(l.reason ?? ""), l.replayed_at || l.replayedAt ? when(String(l.replayed_at ?? l.replayedAt)) : button(t("ops.replay"), () => void post(`/${s}/ops/dead-letters/${String(l.id)}/replay`).then(() => window.dispatchEvent(new HashChangeEvent("hashchange"))).catch((e: Error) => announce(e.message, "error")), { class: "small" })])))
      : h("p", {}, t("common.none")),
  );

  const items = ((clients?.items ?? clients?.clients ?? []) as Json[]) ?? [];
  if (items.length) {
    const keys = Object.keys(items[0]!).filter((k) => k !== "nip" && k !== "client_nip");
    const ch = ["NIP", ...keys];
    main.append(
      h("h2", {}, t("ops.clients")),
      table(ch, items.map((c) => row(ch, [h("span", { class: "mono" }, String(c.nip ?? c.client_nip)), ...keys.map((k) => describe(c[k]))]))),
    );
  }
  if (calls) main.append(h("h2", {}, t("ops.calls")), await chart(calls));
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string" && /^\d{4}-\d{2}-\d{2}T/.test(value)) return when(value);
  if (Array.isArray(value)) return value.map(describe).join(", ");
  if (typeof value === "object") return Object.entries(value as Json).map(([k, v]) => `${k}: ${describe(v)}`).join("; ");
  return String(value);
}

interface Point {
  hour: string;
  calls: number;
  rate_limited?: number;
  throttled?: number;
}

async function chart(data: Json): Promise<HTMLElement> {
  const points = ((data.items ?? data.hours ?? data.series ?? []) as Point[]) ?? [];
  const box = h("div", { class: "chart", role: "img", "aria-label": `${t("ops.calls")}: ${points.map((p) => `${p.hour} ${p.calls}/${p.rate_limited ?? p.throttled ?? 0}`).join(", ")}` });
  if (!points.length) return h("p", {}, t("common.none"));
  // The module is loaded only here: the other pages never pay for it.
  const { default: uPlot } = (await import("../../vendor/uPlot.esm.js" as string)) as { default: new (opts: unknown, data: unknown, el: HTMLElement) => unknown };
  const xs = points.map((p) => Date.parse(p.hour) / 1000);
  new uPlot(
    {
      width: Math.min(900, window.innerWidth - 40),
      height: 220,
      series: [{}, { label: "calls", stroke: "#1f5fa8" }, { label: "429", stroke: "#b3261e" }],
      axes: [{}, {}],
    },
    [xs, points.map((p) => p.calls), points.map((p) => p.rate_limited ?? p.throttled ?? 0)],
    box,
  );
  return box;
}
