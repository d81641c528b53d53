import { get } from "./api.js";

export interface Membership {
  organisation_id: string | null;
  organisation_name: string | null;
  kind: string | null;
  role: string;
}

export interface Me {
  id: string;
  email: string;
  display_name: string | null;
  memberships: Membership[];
  context: { org: string | null; org_kind: string | null; roles: string[]; perms: string[]; nips: string[] };
}

let current: Me | null = null;

export async function me(force = false): Promise<Me> {
  if (!current || force) current = await get<Me>("/auth/me");
  return current;
}

export function forget(): void {
  current = null;
}

export type Side = "client" | "office" | "ops";

export function side(user: Me): Side {
  if (user.context.org_kind === "client") return "client";
  if (user.context.org_kind === "office") return "office";
  return "ops";
}

export function can(user: Me, perm: string): boolean {
  return user.context.perms.includes(perm);
}

export function organisationName(user: Me): string {
  return user.memberships.find((m) => m.organisation_id === user.context.org)?.organisation_name ?? "";
}

/** The client's own NIP (a client user's token carries exactly one). */
export function ownNip(user: Me): string {
  return user.context.nips[0] ?? "";
}
