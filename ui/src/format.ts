import { lang } from "./i18n.js";

export function money(amount: string | number | null | undefined, currency = "PLN"): string {
  if (amount === null || amount === undefined || amount === "") return "—";
  const value = typeof amount === "number" ? amount : Number(amount);
  return new Intl.NumberFormat(lang() === "pl" ? "pl-PL" : "en-GB", { style: "currency", currency }).format(value);
}

export function when(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return new Intl.DateTimeFormat(lang() === "pl" ? "pl-PL" : "en-GB", {
    dateStyle: "short",
    timeStyle: "short",
  }).format(d);
}

export function day(iso: string | null | undefined): string {
  return iso ? iso.slice(0, 10) : "—";
}

export function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined) return "—";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
