import { get, post } from "../api.js";
import { announce, button, h, row, table } from "../dom.js";
import { type Key, t } from "../i18n.js";
import { when } from "../format.js";
import type { Me } from "../session.js";

export interface Integration {
  id: string;
  office_id: string;
  office_nip: string;
  office_name: string;
  client_nip: string;
  client_name: string | null;
  client_email: string;
  return_email: string;
  scope: { read_purchases: boolean; send_sales: boolean };
  state: string;
  access_mode: string | null;
  access: { status: string | null; checked_at: string | null; reason: string | null };
  requested_at: string;
  requested_by: string;
  consented_at: string | null;
  consented_by: string | null;
  activated_at: string | null;
  activated_by: string | null;
  ended_at: string | null;
  suspended_by: string | null;
  consent_expires_at: string | null;
  activation_code: { state: string; expires_at: string | null; attempts_left: number } | null;
}

export const stateName = (state: string): string => t(`state.${state}` as Key);

export async function renderOffices(main: HTMLElement, _user: Me): Promise<void> {
  const integrations = await get<Integration[]>("/approval/client/integrations");
  const headers = [t("offices.office"), t("common.state"), t("clients.requested"), t("clients.consented"), t("clients.activated"), t("common.actions")];
  const change = (i: Integration, what: string) => async () => {
    if (what === "revoke" && !window.confirm(t("offices.confirmRevoke"))) return;
    try {
      await post(`/approval/integrations/${i.id}/${what}`);
      announce(`${i.office_name}: ${t(`offices.${what}` as Key)}`);
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (err) {
      announce((err as Error).message, "error");
    }
  };
  const rows = integrations.map((i) =>
    row(headers, [
      [i.office_name, h("br"), h("small", { class: "mono" }, i.office_nip)],
      [
        h("span", { class: `tag state-${i.state}` }, stateName(i.state)),
        i.state === "requested" ? h("p", { class: "hint" }, `${t("offices.requestedHint")} ${i.client_email}.`) : null,
      ],
      when(i.requested_at),
      when(i.consented_at),
      when(i.activated_at),
      [
        i.state === "active" ? button(t("offices.suspend"), () => void change(i, "suspend")(), { class: "small" }) : null,
        i.state === "suspended" && i.suspended_by === "client" ? button(t("offices.resume"), () => void change(i, "resume")(), { class: "small" }) : null,
        ["active", "suspended", "consented"].includes(i.state) ? button(t("offices.revoke"), () => void change(i, "revoke")(), { class: "small danger" }) : null,
      ],
    ]),
  );
  main.append(h("h1", {}, t("offices.title")), rows.length ? table(headers, rows) : h("p", {}, t("common.none")));
}
