// One natter for the whole run; each test makes its own users.
import { startSystem } from "./system";

export default async function globalSetup() {
  const system = await startSystem();
  process.env.NATTER_URL = system.url;
  process.env.NATTER_LOG = system.log;
  return () => system.stop();
}
