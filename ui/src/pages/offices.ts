import { get, post } from "../api.js";
import { announce, button, fail, h, reload, row, table } from "../dom.js";
import { type Key, t } from "../i18n.js";
import { when } from "../format.js";
import { can, type Me } from "../session.js";

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

// The API's names of the changes: POST /approval/integrations/{id}/{suspension|resumption|revocation}.
const CHANGES = { suspend: "suspension", resume: "resumption", revoke: "revocation" } as const;

export async function renderOffices(main: HTMLElement, user: Me): Promise<void> {
  const integrations = await get<Integration[]>("/approval/client/integrations");
  const headers = [t("offices.office"), t("common.state"), t("clients.requested"), t("clients.consented"), t("clients.activated"), t("common.actions")];
  const change = (i: Integration, what: keyof typeof CHANGES) => async () => {
    if (what === "revoke" && !window.confirm(t("offices.confirmRevoke"))) return;
    try {
      await post(`/approval/integrations/${i.id}/${CHANGES[what]}`);
      announce(`${i.office_name}: ${t(`offices.${what}` as Key)}`);
      reload();
    } catch (err) {
      fail(err);
    }
  };
  const owner = can(user, "users.manage");
  const rows = integrations.map((i) =>
    row(
      headers,
      [
        [i.office_name, h("br"), h("small", { class: "mono" }, i.office_nip)],
        [
          h("span", { class: `tag state-${i.state}`, "data-state": i.state }, stateName(i.state)),
          i.state === "requested" && !owner ? h("p", { class: "hint" }, `${t("offices.requestedHint")} ${i.client_email}.`) : null,
        ],
        when(i.requested_at),
        when(i.consented_at),
        when(i.activated_at),
        [
          i.state === "requested" && owner ? consentForm(i) : null,
          i.state === "active" ? button(t("offices.suspend"), () => void change(i, "suspend")(), { class: "small" }) : null,
          i.state === "suspended" && i.suspended_by === "client" ? button(t("offices.resume"), () => void change(i, "resume")(), { class: "small" }) : null,
          ["active", "suspended", "consented"].includes(i.state) ? button(t("offices.revoke"), () => void change(i, "revoke")(), { class: "small danger" }) : null,
        ],
      ],
      { "data-office": i.office_nip },
    ),
  );
  main.append(h("h1", {}, t("offices.title")), rows.length ? table(headers, rows) : h("p", {}, t("common.none")));
}

/** The consent page's choice inside the application: the owner, signed in, needs no link (the link is spent). */
function consentForm(i: Integration): HTMLElement {
  const name = `access-${i.id}`;
  const choice = (value: "grant" | "token", label: string, checked: boolean) =>
    h("label", {}, h("input", { type: "radio", name, value, checked }), " ", label);
  const form = h(
    "form",
    { class: "consent", "aria-label": `${t("offices.consentFor")} ${i.office_name}` },
    h("p", { class: "hint" }, i.scope.send_sales ? t("offices.scopeWithSales") : t("offices.scope")),
    h(
      "fieldset",
      {},
      h("legend", {}, t("offices.accessMode")),
      choice("grant", t("offices.grant").replace("{nip}", i.office_nip), true),
      choice("token", t("offices.token"), false),
    ),
  );
  const decide = async (decision: "agree" | "refuse") => {
    if (decision === "refuse" && !window.confirm(t("offices.confirmRefuse"))) return;
    const mode = (form.querySelector(`input[name="${name}"]:checked`) as HTMLInputElement | null)?.value ?? "grant";
    try {
      await post(`/approval/integrations/${i.id}/consent`, decision === "agree" ? { decision, access_mode: mode } : { decision });
      announce(`${i.office_name}: ${decision === "agree" ? t("offices.agreed") : t("offices.refused")}`);
      reload();
    } catch (err) {
      fail(err);
    }
  };
  form.append(
    button(t("offices.agree"), () => void decide("agree"), { class: "primary small" }),
    " ",
    button(t("offices.refuse"), () => void decide("refuse"), { class: "small danger" }),
  );
  return form;
}
