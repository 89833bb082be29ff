// Shared by the browser checks: Debian's Chromium through playwright-core (NODE_PATH points at the npm cache),
// unpkg URLs answered from the local npm copies, and any other non-loopback request refused (the cluster and
// the tests are offline; a page that needs the internet must fail here). With `offline`, unpkg is refused too.
const path = require("path");
const { chromium } = require("playwright-core");

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
              "--no-first-run", "--disable-component-update", "--disable-sync"];

async function open(config) {
  const browser = await chromium.launch({ executablePath: config.chromium, args: ARGS });
  const page = await browser.newPage({ viewport: config.viewport || { width: 1100, height: 750 } });
  const log = [], refused = [];
  page.on("console", m => log.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", e => log.push(`pageerror: ${e.message}`));
  await page.route("**/*", route => {
    const url = new URL(route.request().url());
    if (url.hostname === "127.0.0.1" || url.protocol === "data:" || url.protocol === "blob:") return route.continue();
    const m = url.hostname === "unpkg.com" && url.pathname.match(/^\/([^/]+@[^/]+)\/(.+)$/);
    if (m && config.routes[m[1]] && !config.offline) return route.fulfill({ path: path.join(config.routes[m[1]], m[2]) });
    refused.push(url.href);
    return route.abort();
  });
  return { browser, page, log, refused };
}

// The last line of stdout is the result, as JSON; the Python side parses it.
async function main(check) {
  const config = JSON.parse(process.argv[2]);
  const session = await open(config);
  try {
    const result = await check(session.page, config);
    console.log(JSON.stringify({ ...result, log: session.log, refused: session.refused }));
  } catch (e) {
    console.error(String(e && e.stack || e));
    console.error(session.log.join("\n"));
    process.exitCode = 1;
  } finally {
    await session.browser.close();
  }
}

module.exports = { main };
