import { del, get, post } from "../api.js";
import { button, fail, field, h, reload, row, table } from "../dom.js";
import { t } from "../i18n.js";
import { when } from "../format.js";
import type { Me } from "../session.js";

interface ApiKey {
  id: string;
  name: string;
  perms: string[];
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

export async function renderApiKeys(main: HTMLElement, user: Me): Promise<void> {
  const org = user.context.org!;
  const keys = await get<ApiKey[]>(`/auth/organisations/${org}/api-keys`);
  const headers = [t("common.name"), t("keys.perms"), t("common.created"), t("keys.lastUsed"), t("common.actions")];
  const rows = keys.map((k) =>
    row(headers, [k.name, k.perms.join(", "), when(k.created_at), when(k.last_used_at), k.revoked_at ? t("keys.revoked") : button(t("keys.revoke"), () => void del(`/auth/organisations/${org}/api-keys/${k.id}`).then(reload).catch(fail), { class: "small danger" })]),
  );
  const name = h("input", { type: "text", required: true, maxlength: 100 });
  const perms = user.context.perms.filter((p) => p !== "users.manage");
  const boxes = perms.map((p) => h("input", { type: "checkbox", value: p, name: "perm" }));
  const shown = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, t("keys.create")),
    field(t("common.name"), name),
    h("fieldset", {}, h("legend", {}, t("keys.perms")), boxes.map((b) => h("label", { class: "check" }, b, ` ${b.value}`))),
    h("button", { type: "submit", class: "primary" }, t("keys.create")),
    shown,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    post<{ key: string }>(`/auth/organisations/${org}/api-keys`, { name: name.value.trim(), perms: boxes.filter((b) => b.checked).map((b) => b.value) })
      .then((created) => shown.replaceChildren(h("p", {}, h("code", {}, created.key)), h("p", { class: "hint" }, t("common.shownOnce"))))
      .catch(fail);
  });
  main.append(h("h1", {}, t("keys.title")), rows.length ? table(headers, rows) : h("p", {}, t("common.none")), form);
}
