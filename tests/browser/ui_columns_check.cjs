// The Dagster UI's asset page: the Overview's Columns section (the latest materialization's
// dagster/column_schema) shows a column's description. Config: url, column, text, screenshot.
const { main } = require("./launch.cjs");

main(async (page, config) => {
  await page.goto(config.url);
  await page.getByText("Columns", { exact: true }).first().waitFor({ timeout: 30000 });
  try {  // the UI's first-visit "Join the Dagster community" dialog would cover the page
    const skip = page.getByRole("button", { name: "Skip" });
    await skip.waitFor({ timeout: 3000 });
    await skip.click();
  } catch (e) { /* not shown */ }
  const row = page.locator("tr", { hasText: config.text }).first();
  await row.waitFor({ timeout: 15000 });
  await row.scrollIntoViewIfNeeded();
  const cell = row.getByText(config.text, { exact: true });
  const visible = await cell.isVisible();
  const rowText = await row.innerText();
  await page.screenshot({ path: config.screenshot });
  return { visible, rowText };
});
