import { ApiError, get, login } from "../api.js";
import { button, field, h } from "../dom.js";
import { type Key, t } from "../i18n.js";

interface DemoAccount {
  email: string;
  role: string;
  organisation: string | null;
}

interface UiConfig {
  demo: boolean;
  accounts: DemoAccount[];
  // Only when the accounts were made with the password the README publishes (never an operator's own).
  password: string | null;
}

export async function renderLogin(main: HTMLElement, done: () => Promise<void>): Promise<void> {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const otp = h("input", { type: "text", name: "otp", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 8 });
  const error = h("div", { class: "error", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, t("login.title")),
    field(t("login.email"), email),
    field(t("login.password"), password),
    field(t("login.otp"), otp),
    error,
    h("button", { type: "submit", class: "primary" }, t("login.submit")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    error.hidden = true;
    login(email.value.trim(), password.value, otp.value.trim() || undefined)
      .then(done)
      .catch((err: unknown) => {
        error.hidden = false;
        error.textContent = `${t("login.failed")}: ${err instanceof ApiError ? err.message : String(err)}`;
      });
  });
  main.append(form);

  let config: UiConfig | null = null;
  try {
    config = await get<UiConfig>("/ui-config");
  } catch {
    config = null; // a static bundle without the embedded runner: no demo accounts to list
  }
  if (config?.demo && config.accounts.length) {
    const list = h(
      "ul",
      { class: "accounts" },
      config.accounts.map((account) =>
        h(
          "li",
          {},
          button(`${t("login.use")}: ${account.email}`, () => {
            email.value = account.email;
            if (config?.password) password.value = config.password;
            (config?.password ? form.querySelector<HTMLButtonElement>("button[type=submit]") : password)?.focus();
          }, { class: "link", "data-email": account.email }),
          " — ",
          roleName(account.role),
          account.organisation ? `, ${account.organisation}` : "",
        ),
      ),
    );
    main.append(
      h(
        "section",
        { class: "card narrow", "aria-labelledby": "demo-title" },
        h("h2", { id: "demo-title" }, t("login.demo")),
        config.password
          ? h("p", {}, t("login.demoHint"), " ", h("code", {}, config.password))
          : h("p", {}, t("login.demoOwnPassword")),
        list,
      ),
    );
  }
}

export function roleName(role: string): string {
  const key = `role.${role}` as Key;
  try {
    return t(key);
  } catch {
    return role;
  }
}
