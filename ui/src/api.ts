// Every datum comes from the services' public REST APIs, on this origin (the embedded runner mounts them under
// /auth, /gateway, /buffer, /approval and /notify; the distributed mode's ingress routes the same prefixes).
//
// Tokens live in sessionStorage: one tab's session, gone when the tab closes, never in a cookie that another site
// could make the browser send (so no CSRF), and never readable by markup from an API (the DOM is built from text).

export interface Problem {
  title?: string;
  detail?: string;
  status?: number;
  code?: string;
  errors?: { loc?: (string | number)[]; msg?: string; message?: string }[];
  [key: string]: unknown;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(ApiError.describe(status, problem));
  }

  static describe(status: number, problem: Problem): string {
    const parts = [problem.title ?? `HTTP ${status}`];
    if (problem.detail) parts.push(problem.detail);
    for (const e of problem.errors ?? []) {
      parts.push([(e.loc ?? []).join("."), e.msg ?? e.message].filter(Boolean).join(": "));
    }
    return parts.join(" — ");
  }
}

interface Tokens {
  access: string;
  refresh: string;
  expiresAt: number;
}

const STORE = "ksef-hub.session";

function load(): Tokens | null {
  const raw = sessionStorage.getItem(STORE);
  if (!raw) return null;
  try {
    return JSON.parse(raw) as Tokens;
  } catch {
    return null;
  }
}

function save(tokens: Tokens | null): void {
  if (tokens) sessionStorage.setItem(STORE, JSON.stringify(tokens));
  else sessionStorage.removeItem(STORE);
}

interface TokenResponse {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

function keep(body: TokenResponse): void {
  save({ access: body.access_token, refresh: body.refresh_token, expiresAt: Date.now() + body.expires_in * 1000 });
}

export function signedIn(): boolean {
  return load() !== null;
}

export async function login(email: string, password: string, otp?: string): Promise<void> {
  const body: Record<string, string> = { email, password };
  if (otp) body.otp = otp;
  keep(await request<TokenResponse>("POST", "/auth/login", { body, anonymous: true }));
}

export async function logout(): Promise<void> {
  const tokens = load();
  save(null);
  if (tokens) {
    await request("POST", "/auth/logout", { body: { refresh_token: tokens.refresh }, anonymous: true }).catch(() => {});
  }
}

let refreshing: Promise<boolean> | null = null;

async function refresh(): Promise<boolean> {
  const tokens = load();
  if (!tokens) return false;
  // One refresh at a time: a rotated refresh token used twice revokes its whole family (auth-svc's reuse rule).
  refreshing ??= request<TokenResponse>("POST", "/auth/token/refresh", {
    body: { refresh_token: tokens.refresh },
    anonymous: true,
  })
    .then((body) => {
      keep(body);
      return true;
    })
    .catch(() => {
      save(null);
      return false;
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

export type Query = Record<string, string | number | boolean | null | undefined>;

interface Options {
  body?: unknown;
  query?: Query;
  anonymous?: boolean;
  accept?: string;
  headers?: Record<string, string>;
}

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === null || v === undefined || v === "") continue;
    params.set(k, String(v));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/** Called when the session is over (refresh refused): the app shows the login page. */
export let onSignedOut: () => void = () => {};
export function setSignedOutHandler(handler: () => void): void {
  onSignedOut = handler;
}

async function send(method: string, path: string, options: Options): Promise<Response> {
  const headers: Record<string, string> = { accept: options.accept ?? "application/json", ...options.headers };
  let body: BodyInit | undefined;
  if (options.body !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  if (!options.anonymous) {
    let tokens = load();
    if (tokens && tokens.expiresAt - Date.now() < 30_000 && (await refresh())) tokens = load();
    if (tokens) headers.authorization = `Bearer ${tokens.access}`;
  }
  return fetch(withQuery(path, options.query), { method, headers, body, credentials: "same-origin" });
}

export async function raw(method: string, path: string, options: Options = {}): Promise<Response> {
  let response = await send(method, path, options);
  if (response.status === 401 && !options.anonymous) {
    if (await refresh()) response = await send(method, path, options);
    else onSignedOut();
  }
  if (!response.ok) {
    let problem: Problem = {};
    try {
      problem = (await response.json()) as Problem;
    } catch {
      problem = { title: response.statusText };
    }
    throw new ApiError(response.status, problem);
  }
  return response;
}

export async function request<T = unknown>(method: string, path: string, options: Options = {}): Promise<T> {
  const response = await raw(method, path, options);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

export const get = <T>(path: string, query?: Query): Promise<T> => request<T>("GET", path, { query });
export const post = <T>(path: string, body?: unknown, query?: Query): Promise<T> =>
  request<T>("POST", path, { body, query });
export const patch = <T>(path: string, body: unknown): Promise<T> => request<T>("PATCH", path, { body });
export const put = <T>(path: string, body: unknown): Promise<T> => request<T>("PUT", path, { body });
export const del = <T>(path: string): Promise<T> => request<T>("DELETE", path);

/** Bytes received so far, and the total when the server said it (a streamed bundle has no Content-Length). */
export type Progress = (received: number, total: number | null) => void;

/** A file the API serves behind a bearer token: fetched (reporting progress as it arrives), then handed to the
 * browser as a download. */
export async function download(path: string, filename: string, query?: Query, progress?: Progress): Promise<void> {
  const response = await raw("GET", path, { query, accept: "*/*" });
  const blob = progress && response.body ? await readAll(response, progress) : await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function readAll(response: Response, progress: Progress): Promise<Blob> {
  const length = Number(response.headers.get("content-length"));
  const total = Number.isFinite(length) && length > 0 ? length : null;
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let received = 0;
  progress(0, total);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.byteLength;
    progress(received, total);
  }
  return new Blob(chunks as BlobPart[], { type: response.headers.get("content-type") ?? "application/octet-stream" });
}

/** An image or document behind a bearer token, as an object URL for <img> or <iframe>. */
export async function objectUrl(path: string, query?: Query): Promise<string> {
  const response = await raw("GET", path, { query, accept: "*/*" });
  return URL.createObjectURL(await response.blob());
}

export async function text(path: string, query?: Query): Promise<string> {
  const response = await raw("GET", path, { query, accept: "text/html, text/plain, */*" });
  return response.text();
}
