// Light, dark, or the system's; the choice is kept in localStorage and set
// as data-theme on <html> (the stylesheet does the rest).
import { signal } from "@preact/signals";

export type Theme = "system" | "light" | "dark";

function initial(): Theme {
  const v = localStorage.getItem("natter.theme");
  return v === "light" || v === "dark" ? v : "system";
}

export const theme = signal<Theme>(initial());

function apply(v: Theme) {
  if (v === "system") document.documentElement.removeAttribute("data-theme");
  else document.documentElement.setAttribute("data-theme", v);
}

export function setTheme(v: Theme) {
  if (v === "system") localStorage.removeItem("natter.theme");
  else localStorage.setItem("natter.theme", v);
  theme.value = v;
  apply(v);
}

apply(theme.value);
