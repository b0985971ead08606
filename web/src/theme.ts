// Light, dark, or the system's; the choice is kept in localStorage. The
// theme in force is always set as data-theme on <html> ("system" follows
// prefers-color-scheme as it changes); the stylesheet does the rest.
import { signal } from "@preact/signals";

export type Theme = "system" | "light" | "dark";

function initial(): Theme {
  const v = localStorage.getItem("natter.theme");
  return v === "light" || v === "dark" ? v : "system";
}

export const theme = signal<Theme>(initial());

const dark = matchMedia("(prefers-color-scheme: dark)");

function apply(v: Theme) {
  const resolved = v === "system" ? (dark.matches ? "dark" : "light") : v;
  document.documentElement.setAttribute("data-theme", resolved);
}

dark.addEventListener("change", () => apply(theme.value));

export function setTheme(v: Theme) {
  if (v === "system") localStorage.removeItem("natter.theme");
  else localStorage.setItem("natter.theme", v);
  theme.value = v;
  apply(v);
}

apply(theme.value);
