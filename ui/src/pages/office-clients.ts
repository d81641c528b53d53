import { get, post } from "../api.js";
import { announce, button, fail, field, h, reload, row, table } from "../dom.js";
import { t } from "../i18n.js";
import { when } from "../format.js";
import { type Me, can } from "../session.js";
import { type Integration, stateName } from "./offices.js";

// Actors come as user ids (or "link:<e-mail>" for the consent link's holder): shown by the member's e-mail.
let people: Map<string, string> = new Map();

function actor(at: string | null, by: string | null): (Node | string)[] {
  if (!at) return ["—"];
  const who = by ? (people.get(by) ?? by) : "";
  return [when(at), who ? h("small", { class: "hint" }, ` ${t("clients.by")} ${who}`) : ""];
}

export async function renderOfficeClients(main: HTMLElement, user: Me): Promise<void> {
  const office = user.context.org!;
  const [integrations, members] = await Promise.all([
    get<Integration[]>(`/approval/offices/${office}/integrations`),
    get<{ user_id: string; email: string }[]>(`/auth/organisations/${office}/members`).catch(() => []),
  ]);
  people = new Map(members.map((m) => [m.user_id, m.email]));
  const headers = [t("clients.client"), t("common.state"), t("clients.requested"), t("clients.consented"), t("clients.activated"), t("clients.access"), t("common.actions")];

  const rows = integrations.map((i) => {
    const actions: (Node | string)[] = [];
    if (i.state === "active" || i.state === "suspended") {
      actions.push(h("a", { href: `#/office/client/${i.client_nip}/buffer`, class: "button small" }, `${t("clients.open")} ${i.client_name ?? i.client_nip}`));
    }
    if (i.state === "consented" && can(user, "clients.manage")) {
      const code = h("input", { type: "text", inputmode: "text", autocomplete: "off", maxlength: 32, "aria-label": `${t("clients.code")} ${i.client_nip}`, "data-code": i.client_nip });
      const form = h("form", { class: "inline" }, code, h("button", { type: "submit", class: "primary small" }, t("clients.activate")));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        post(`/approval/integrations/${i.id}/activation`, { code: code.value.trim() })
          .then(() => {
            announce(`${i.client_name ?? i.client_nip}: ${t("clients.activated.ok")}`);
            reload();
          })
          .catch(fail);
      });
      actions.push(form);
      if (i.activation_code) actions.push(h("small", { class: "hint" }, ` ${i.activation_code.state}, ${i.activation_code.attempts_left} · ${when(i.activation_code.expires_at)}`));
    }
    if (["refused", "expired", "revoked"].includes(i.state) && can(user, "clients.manage")) {
      actions.push(button(t("clients.renew"), () => void post(`/approval/integrations/${i.id}/renewal`).then(reload).catch(fail), { class: "small" }));
    }
    const access = i.access_mode ? `${i.access_mode}${i.access.status ? ` · ${i.access.status}` : ""}${i.access.checked_at ? ` · ${when(i.access.checked_at)}` : ""}` : "—";
    return row(headers, [
      [i.client_name ?? "—", h("br"), h("small", { class: "mono" }, i.client_nip)],
      h("span", { class: `tag state-${i.state}`, "data-state": i.state }, stateName(i.state)),
      actor(i.requested_at, i.requested_by),
      actor(i.consented_at, i.consented_by),
      actor(i.activated_at, i.activated_by),
      access,
      actions,
    ], { "data-client": i.client_nip });
  });

  main.append(h("h1", {}, t("clients.title")), rows.length ? table(headers, rows) : h("p", {}, t("common.none")));
  if (can(user, "clients.manage")) main.append(requestForm(office, user, reload));
}

function requestForm(office: string, user: Me, reload: () => void): HTMLElement {
  const nip = h("input", { type: "text", name: "client_nip", inputmode: "numeric", pattern: "[0-9]{10}", maxlength: 10, required: true });
  const name = h("input", { type: "text", name: "client_name", maxlength: 200 });
  const email = h("input", { type: "email", name: "client_email", required: true });
  const back = h("input", { type: "email", name: "return_email", required: true, value: user.email });
  const sales = h("input", { type: "checkbox", name: "send_sales" });
  const language = h("select", { name: "client_language" }, h("option", { value: "pl" }, "polski"), h("option", { value: "en" }, "English"));
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "request-title" },
    h("h2", { id: "request-title" }, t("clients.request")),
    field(t("clients.nip"), nip),
    field(t("clients.clientName"), name),
    field(t("clients.clientEmail"), email),
    field(t("clients.returnEmail"), back),
    h("div", { class: "field" }, h("label", {}, sales, " ", t("clients.sendSales"))),
    field(t("clients.clientLanguage"), language),
    h("button", { type: "submit", class: "primary" }, t("clients.send")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    post(`/approval/offices/${office}/integrations`, {
      client_nip: nip.value.trim(),
      client_name: name.value.trim() || null,
      client_email: email.value.trim(),
      return_email: back.value.trim(),
      send_sales: sales.checked,
      client_language: language.value,
      return_language: document.documentElement.lang === "en" ? "en" : "pl",
    })
      .then(() => {
        announce(t("clients.sent"));
        reload();
      })
      .catch(fail);
  });
  return form;
}
