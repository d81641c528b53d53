// A hash router over a handful of pages. Each page renders into <main> and moves focus there, so keyboard and
// screen-reader users land on the new content after every navigation.

import { ApiError, logout, setSignedOutHandler, signedIn } from "./api.js";
import { announce, button, clear, h } from "./dom.js";
import { type Key, lang, setLang, t } from "./i18n.js";
import { forget, type Me, me, organisationName, side } from "./session.js";
import { renderApiKeys } from "./pages/api-keys.js";
import { renderClientBuffer } from "./pages/client-buffer.js";
import { renderLedger } from "./pages/ledger.js";
import { renderLogin } from "./pages/login.js";
import { renderOffices } from "./pages/offices.js";
import { renderClientKsef, renderOfficeClient } from "./pages/office-client.js";
import { renderOfficeClients } from "./pages/office-clients.js";
import { renderOps } from "./pages/ops.js";
import { renderWebhooks } from "./pages/webhooks.js";

type Page = (main: HTMLElement, user: Me, params: string[]) => Promise<void>;

const ROUTES: [RegExp, Page][] = [
  [/^client\/buffer(?:\/(\d{4}-\d{2}))?$/, renderClientBuffer],
  [/^client\/offices$/, renderOffices],
  [/^client\/ledger$/, renderLedger],
  [/^client\/ksef$/, renderClientKsef],
  [/^office\/clients$/, renderOfficeClients],
  [/^office\/client\/(\d{10})(?:\/(buffer|sales|ksef|log))?$/, renderOfficeClient],
  [/^office\/webhooks$/, renderWebhooks],
  [/^(?:office|client)\/api-keys$/, renderApiKeys],
  [/^ops$/, renderOps],
];

const HOME = { client: "#/client/buffer", office: "#/office/clients", ops: "#/ops" } as const;

const NAV: Record<keyof typeof HOME, [string, Key][]> = {
  client: [
    ["#/client/buffer", "nav.buffer"],
    ["#/client/offices", "nav.offices"],
    ["#/client/ledger", "nav.ledger"],
    ["#/client/ksef", "client.tab.ksef"],
    ["#/client/api-keys", "nav.apiKeys"],
  ],
  office: [
    ["#/office/clients", "nav.clients"],
    ["#/office/webhooks", "nav.webhooks"],
    ["#/office/api-keys", "nav.apiKeys"],
  ],
  ops: [["#/ops", "nav.ops"]],
};

function header(user: Me | null): void {
  const top = document.getElementById("top")!;
  const langButton = button(t("lang.switch"), () => {
    setLang(lang() === "pl" ? "en" : "pl");
    void route();
  }, { "aria-label": t("lang.switchLabel"), class: "link" });
  if (!user) {
    clear(top, h("span", { class: "brand" }, t("app.name")), langButton);
    return;
  }
  const here = location.hash.split("?")[0];
  const links = NAV[side(user)].map(([href, key]) =>
    h("li", {}, h("a", { href, "aria-current": here.startsWith(href) ? "page" : null }, t(key))),
  );
  clear(
    top,
    h("span", { class: "brand" }, t("app.name")),
    h("nav", { "aria-label": t("nav.main") }, h("ul", {}, links)),
    h("span", { class: "who" }, `${user.email}${organisationName(user) ? ` · ${organisationName(user)}` : ""}`),
    langButton,
    button(t("nav.logout"), () => {
      void logout().then(() => {
        forget();
        location.hash = "#/login";
      });
    }, { class: "link" }),
  );
}

let generation = 0;

async function route(): Promise<void> {
  const mine = ++generation;
  document.documentElement.lang = lang();
  const main = document.getElementById("main")!;
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  if (!signedIn() || path === "login") {
    header(null);
    clear(main);
    await renderLogin(main, async () => {
      forget();
      const user = await me(true);
      location.hash = HOME[side(user)];
    });
    return;
  }
  let user: Me;
  try {
    user = await me();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      location.hash = "#/login";
      return;
    }
    throw err;
  }
  header(user);
  const match = ROUTES.map(([re, page]) => [path.match(re), page] as const).find(([m]) => m);
  if (!match) {
    location.replace(HOME[side(user)]);
    return;
  }
  const [m, page] = match;
  clear(main, h("p", { class: "loading" }, t("common.loading")));
  try {
    const fresh = h("div", {});
    await page(fresh, user, m!.slice(1).filter((x): x is string => x !== undefined));
    if (mine !== generation) return; // the user navigated on meanwhile
    clear(main, ...Array.from(fresh.childNodes));
    main.focus({ preventScroll: true });
  } catch (err) {
    if (mine !== generation) return;
    clear(main, h("div", { class: "error", role: "alert" }, `${t("common.error")}: ${(err as Error).message}`));
  }
}

setSignedOutHandler(() => {
  forget();
  if (location.hash !== "#/login") location.hash = "#/login";
});

window.addEventListener("hashchange", () => void route());
window.addEventListener("unhandledrejection", (ev) => announce(String((ev.reason as Error)?.message ?? ev.reason), "error"));
void route();
