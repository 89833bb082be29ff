// map.html in the browser: every layer draws features, a click on a polygon opens its attributes, the layer
// list hides a layer. Config: url, slugs, click ([lon, lat] inside a polygon), screenshot.
const { main } = require("./launch.cjs");

// Features drawn per layer, once the map and its tiles have loaded (null before; and, with `all`, until every
// layer has some). Runs in the page.
const rendered = ({ slugs, all }) => {
  const map = window.cngMap;
  if (!map || !map.loaded() || !map.areTilesLoaded()) return null;
  const counts = Object.fromEntries(slugs.map(s => [s, 0]));
  for (const f of map.queryRenderedFeatures()) if (f.source in counts) counts[f.source] += 1;
  return all && !Object.values(counts).every(n => n > 0) ? null : counts;
};

main(async (page, config) => {
  const slugs = config.slugs;
  await page.goto(config.url);
  const counts = await (await page.waitForFunction(rendered, { slugs, all: true }, { timeout: 30000 })).jsonValue();
  const layerList = await page.locator("#layers label").allInnerTexts();

  const [x, y] = await page.evaluate(lngLat => {
    const p = window.cngMap.project(lngLat);
    return [p.x, p.y];
  }, config.click);
  const target = await page.evaluate(([x, y]) => document.elementFromPoint(x, y).tagName, [x, y]);
  await page.mouse.click(x, y);
  const popup = page.locator(".maplibregl-popup-content");
  await popup.waitFor({ timeout: 5000 });
  const popupText = await popup.innerText();
  const popupHtml = await popup.innerHTML();
  await page.screenshot({ path: config.screenshot });

  await page.locator(`#layers input[data-slug="${slugs[0]}"]`).uncheck();
  await page.waitForFunction(slug => !window.cngMap.queryRenderedFeatures().some(f => f.source === slug), slugs[0],
                             { timeout: 5000 });
  const afterHiding = await (await page.waitForFunction(rendered, { slugs, all: false }, { timeout: 5000 })).jsonValue();
  return { counts, layerList, target, popupText, popupHtml, afterHiding };
});
