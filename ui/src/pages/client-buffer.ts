import { get, post } from "../api.js";
import { announce, append, button, fail, field, h, reload } from "../dom.js";
import { t } from "../i18n.js";
import { type Me, can, ownNip } from "../session.js";
import { BufferList, DECISIONS, decisionName } from "./buffer.js";

export interface Month {
  period: string;
  state: "open" | "approved";
  counts: { unverified: number; book: number; dont_book: number; imported: number; archived: number; entries: number };
  late_arrivals: number;
  approved_at: string | null;
  can_approve: boolean;
  can_unlock: boolean;
  blocked_by: { code: string; detail: string } | null;
}

export async function renderClientBuffer(main: HTMLElement, user: Me, [chosen]: string[]): Promise<void> {
  const nip = ownNip(user);
  const months = await get<Month[]>(`/approval/clients/${nip}/months`);
  const period = chosen ?? months.find((m) => m.state === "open" && m.counts.entries)?.period ?? months[0]?.period;
  const month = months.find((m) => m.period === period);
  // The month chosen by default goes into the address, so a reload (or a shared link) shows the same month.
  if (!chosen && period) history.replaceState(null, "", `#/client/buffer/${period}`);

  const picker = h(
    "select",
    { id: "month", name: "month" },
    months.map((m) =>
      h(
        "option",
        { value: m.period, selected: m.period === period },
        `${m.period} — ${m.state === "approved" ? t("buffer.approved") : t("buffer.open")} (${m.counts.entries})`,
      ),
    ),
  );
  picker.addEventListener("change", () => (location.hash = `#/client/buffer/${picker.value}`));

  const decision = h(
    "select",
    { name: "decision" },
    h("option", { value: "" }, t("common.all")),
    DECISIONS.map((d) => h("option", { value: d }, decisionName(d))),
  );
  const search = h("input", { type: "search", name: "q", maxlength: 200 });

  const list = new BufferList({
    nip,
    query: { period },
    office: false,
    canDecide: can(user, "buffer.decide") && month?.state !== "approved",
    onChange: () => void refreshMonth(),
  });

  const state = h("div", { class: "month-state", "aria-live": "polite" });
  const actions = h("div", { class: "month-actions" });

  // approval-svc counts a month's decisions from buffer-svc's events, a moment after each save: while the month
  // is open its state is read again every 1.5 s, so "Zatwierdź miesiąc" turns on once the last invoice counts.
  let timer: number | undefined;
  async function refreshMonth(): Promise<void> {
    if (!period) return;
    window.clearTimeout(timer);
    const m = await get<Month>(`/approval/clients/${nip}/months/${period}`);
    if (!state.isConnected && timer !== undefined) return; // the page was left
    renderMonth(m);
    if (m.state === "open") timer = window.setTimeout(() => void refreshMonth().catch(() => {}), 1500);
  }
  window.addEventListener("hashchange", () => window.clearTimeout(timer), { once: true });

  function renderMonth(m: Month): void {
    const c = m.counts;
    state.replaceChildren();
    append(state, [
      h("span", { class: m.state === "approved" ? "tag ok" : "tag" }, m.state === "approved" ? t("buffer.approved") : t("buffer.open")),
      " ",
      h("span", { "data-counts": "" }, `${t("buffer.counts")}: ${c.unverified} / ${c.book} / ${c.dont_book}`),
      m.late_arrivals ? h("span", { class: "tag warn" }, ` ${m.late_arrivals} ${t("buffer.lateArrivals")}`) : null,
      m.blocked_by ? h("p", { class: "hint", "data-blocked": m.blocked_by.code }, blockedText(m)) : null,
      m.state === "approved" ? h("p", { class: "hint" }, t("buffer.locked")) : null,
    ]);
    actions.replaceChildren();
    if (!can(user, "month.approve")) return;
    if (m.state === "open") {
      actions.append(
        button(t("buffer.approve"), () => void change("approve"), { class: "primary", disabled: !m.can_approve }),
      );
    } else {
      actions.append(button(t("buffer.unlock"), () => void change("unlock"), { disabled: !m.can_unlock }));
    }
  }

  async function change(action: "approve" | "unlock"): Promise<void> {
    try {
      await post<Month>(`/approval/clients/${nip}/months/${period}/${action}`);
      announce(action === "approve" ? t("buffer.approvedOk") : t("buffer.unlockedOk"));
      // The lock is buffer-svc's too (it learns of the approval by event): the page is read afresh, on this month.
      const here = `#/client/buffer/${period}`;
      if (location.hash === here) reload();
      else location.hash = here;
    } catch (err) {
      fail(err);
    }
  }

  const filters = h(
    "form",
    { class: "filters", role: "search" },
    field(t("buffer.decision"), decision),
    field(t("buffer.search"), search),
    h("button", { type: "submit" }, t("common.filter")),
  );
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    list.setQuery({ period, decision: decision.value, q: search.value.trim() });
    void list.load();
  });

  main.append(
    h("h1", {}, t("buffer.title")),
    h("div", { class: "month-bar" }, field(t("buffer.month"), picker), state, actions),
    filters,
  );
  if (month) {
    renderMonth(month);
    if (month.state === "open") timer = window.setTimeout(() => void refreshMonth().catch(() => {}), 1500);
  }
  if (period) main.append(await list.load());
  else main.append(h("p", {}, t("buffer.empty")));
}

/** Why the month cannot be approved (or unlocked) now, in the page's language; the API's English detail only for a
 * reason this bundle does not know yet. */
function blockedText(m: Month): string {
  switch (m.blocked_by?.code) {
    case "unverified-invoices":
      return `${t("buffer.blockedUnverified")}: ${m.counts.unverified}`;
    case "already-imported":
      return `${t("buffer.blockedImported")}: ${m.counts.imported}`;
    default:
      return m.blocked_by?.detail ?? "";
  }
}
