import { get } from "../api.js";
import { button, h, row, table } from "../dom.js";
import { t } from "../i18n.js";
import { when } from "../format.js";
import { type Me, ownNip } from "../session.js";

interface LedgerLine {
  id: number;
  at: string;
  principal_id: string;
  principal_type: string;
  org_id: string | null;
  org_kind: string | null;
  action: string;
  target: string | null;
  items: number;
}

export async function renderLedger(main: HTMLElement, user: Me): Promise<void> {
  const nip = ownNip(user);
  const headers = [t("ledger.at"), t("ledger.who"), t("ledger.org"), t("ledger.action"), t("ledger.items")];
  const body = h("div", {});
  let before: number | null = null;
  const lines: LedgerLine[] = [];
  async function more(): Promise<void> {
    const page = await get<{ items: LedgerLine[]; next_before: number | null }>(`/buffer/clients/${nip}/access-ledger`, { before, limit: 100 });
    lines.push(...page.items);
    before = page.next_before;
    const rows = lines.map((l) =>
      row(headers, [when(l.at), `${l.principal_type}: ${l.principal_id}`, `${l.org_kind ?? ""} ${l.org_id ?? ""}`, [l.action, l.target ? h("small", { class: "mono" }, ` ${l.target}`) : null], String(l.items)]),
    );
    body.replaceChildren(rows.length ? table(headers, rows, t("ledger.title")) : h("p", {}, t("common.none")), before ? button(t("common.more"), () => void more()) : "");
  }
  await more();
  main.append(h("h1", {}, t("ledger.title")), h("p", { class: "hint" }, t("ledger.hint")), body);
}
