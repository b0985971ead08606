// Browser tests: Debian's chromium (never a downloaded browser) against a
// real natter and nats-server that tests/global-setup.ts starts.
import { defineConfig } from "@playwright/test";
import { chromiumPath } from "./tests/system";

export default defineConfig({
  testDir: "tests",
  testMatch: "*.spec.ts",
  timeout: 90_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 2,
  retries: 0,
  forbidOnly: true,
  reporter: [["list"]],
  outputDir: "test-results",
  globalSetup: "./tests/global-setup.ts",
  use: {
    browserName: "chromium",
    launchOptions: { executablePath: chromiumPath() },
    locale: "en-US",
    timezoneId: "Asia/Shanghai",
    viewport: { width: 1280, height: 800 },
    trace: "retain-on-failure",
    actionTimeout: 15_000,
  },
});
