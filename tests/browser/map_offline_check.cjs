// map.html with its CDN scripts refused (offline, or a blocked CDN): the panel still lists the layers and says
// what failed. Config: url, screenshot.
const { main } = require("./launch.cjs");

main(async (page, config) => {
  await page.goto(config.url);
  const status = page.locator("#status.failed");
  await status.waitFor({ timeout: 15000 });
  const result = { status: await status.innerText(), layerList: await page.locator("#layers label").allInnerTexts() };
  await page.screenshot({ path: config.screenshot });
  return result;
});
