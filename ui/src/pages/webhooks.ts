import { get, patch, post } from "../api.js";
import { announce, button, fail, field, h, reload, row, table } from "../dom.js";
import { t } from "../i18n.js";
import { when } from "../format.js";
import type { Me } from "../session.js";

interface Subscription {
  id: string;
  url: string;
  event_types: string[];
  enabled: boolean;
  disabled_reason: string | null;
  created_at: string;
}

interface Delivery {
  id: string;
  event_type: string;
  client_nip: string | null;
  status: string;
  attempts: number;
  created_at: string;
  delivered_at: string | null;
  last_status_code: number | null;
  last_error: string | null;
}

export async function renderWebhooks(main: HTMLElement, _user: Me): Promise<void> {
  const subs = await get<Subscription[]>("/notify/webhooks/subscriptions");
  const log = h("div", { "aria-live": "polite" });
  const headers = [t("webhooks.url"), t("webhooks.events"), t("webhooks.enabled"), t("webhooks.metrics"), t("common.actions")];
  const rows = await Promise.all(
    subs.map(async (s) => {
      const metrics = await get<{ success_rate: number | null; backlog: number }>(`/notify/webhooks/subscriptions/${s.id}/metrics`, { window_h: 24 }).catch(() => null);
      return row(headers, [
        h("span", { class: "mono" }, s.url),
        s.event_types.join(", "),
        [s.enabled ? t("common.yes") : t("common.no"), s.disabled_reason ? h("small", { class: "hint" }, ` ${s.disabled_reason}`) : null],
        metrics ? `${metrics.success_rate === null ? "—" : `${Math.round(metrics.success_rate * 100)} %`} · backlog ${metrics.backlog}` : "—",
        [
          button(t("webhooks.deliveries"), () => void deliveries(s, log), { class: "small" }),
          button(t("webhooks.test"), () => void post(`/notify/webhooks/subscriptions/${s.id}/test`, { event_type: "invoice.fetched" }).then(() => announce(t("webhooks.test"))).catch(fail), { class: "small" }),
          button(s.enabled ? "✕" : "✓", () => void patch(`/notify/webhooks/subscriptions/${s.id}`, { enabled: !s.enabled }).then(reload), { class: "small", "aria-label": `${t("webhooks.enabled")}: ${s.enabled ? t("common.no") : t("common.yes")}` }),
        ],
      ]);
    }),
  );
  const url = h("input", { type: "url", required: true, maxlength: 2000, placeholder: "https://erp.example.com/ksef-hub" });
  const events = h("input", { type: "text", value: "*", required: true });
  const secret = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card" }, h("h2", {}, t("webhooks.create")), field(t("webhooks.url"), url), field(t("webhooks.events"), events), h("button", { type: "submit", class: "primary" }, t("webhooks.create")), secret);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    post<{ secret: string }>("/notify/webhooks/subscriptions", { url: url.value.trim(), event_types: events.value.split(",").map((x) => x.trim()).filter(Boolean) })
      .then((created) => secret.replaceChildren(h("p", {}, `${t("webhooks.secret")}: `, h("code", {}, created.secret)), h("p", { class: "hint" }, t("common.shownOnce"))))
      .catch(fail);
  });
  main.append(h("h1", {}, t("webhooks.title")), rows.length ? table(headers, rows) : h("p", {}, t("common.none")), log, form);
}

async function deliveries(s: Subscription, box: HTMLElement): Promise<void> {
  const page = await get<{ items: Delivery[] } | Delivery[]>(`/notify/webhooks/subscriptions/${s.id}/deliveries`, { limit: 50 });
  const items = Array.isArray(page) ? page : page.items;
  const headers = [t("ledger.at"), t("webhooks.event"), "NIP", t("common.state"), t("webhooks.attempts"), t("common.actions")];
  box.replaceChildren(
    h("h2", {}, `${t("webhooks.deliveries")}: ${s.url}`),
    button(t("webhooks.replayFailed"), () => void post(`/notify/webhooks/subscriptions/${s.id}/replay`, { failed: true }).then(() => deliveries(s, box))),
    table(headers, items.map((d) => row(headers, [when(d.created_at), d.event_type, d.client_nip ?? "", [d.status, d.last_status_code ? ` (${d.last_status_code})` : "", d.last_error ? h("small", { class: "hint" }, ` ${d.last_error}`) : null], String(d.attempts), button(t("webhooks.replay"), () => void post(`/notify/webhooks/deliveries/${d.id}/replay`).then(() => deliveries(s, box)).catch(fail), { class: "small" })], { "data-delivery": d.id }))),
  );
}
