// The collection-progress chart: one SVG bar per society and per hospital against its target, drawn by
// hand (no library; the CSP allows SVG attributes and classes, not inline styles), and the same numbers
// as an accessible table.

import { el, svg } from "./dom.js";

function percent(count, target, t) {
  return target ? `${Math.round((100 * count) / target)}%` : t("progress.noTarget");
}

// rows: [{kind: "society"|"site", id, label, count, target}], in display order.
export function drawProgress(chart, tbody, rows, metric, t) {
  if (rows.length === 0) {
    chart.append(el("p", { class: "help", text: t("progress.none") }));
    return;
  }
  const rowH = 30, labelW = 250, barW = 380, width = labelW + barW + 170;
  // A row without a target is drawn grey on the chart's common scale (the largest target or count).
  const scale = Math.max(1, ...rows.map((r) => Math.max(r.count, r.target || 0)));
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${rows.length * rowH + 8}`, width: "100%", role: "img", class: "chart",
    "aria-label": t("progress.chart"), "data-metric": metric,
  });
  rows.forEach((r, i) => {
    const y = i * rowH + 4;
    const g = svg("g", { class: `row ${r.kind}`, "data-kind": r.kind, "data-id": r.id, "data-count": r.count,
      "data-target": r.target ?? "" });
    const indent = r.kind === "site" ? 18 : 0;
    g.append(svg("title", {}, `${r.label}: ${r.count} / ${r.target ?? "-"}`));
    g.append(svg("text", { x: 4 + indent, y: y + 19, class: "label" }, r.label));
    g.append(svg("rect", { x: labelW, y: y + 5, width: barW, height: rowH - 12, rx: 3, class: "track" }));
    const share = r.target ? Math.min(1, r.count / r.target) : r.count / scale;
    const cls = r.target ? (r.count >= r.target ? "fill done" : "fill") : "fill untargeted";
    g.append(svg("rect", { x: labelW, y: y + 5, width: Math.max(share * barW, r.count ? 2 : 0), height: rowH - 12, rx: 3, class: cls }));
    const caption = r.target ? `${r.count} / ${r.target} (${percent(r.count, r.target, t)})` : `${r.count} (${t("progress.noTarget")})`;
    g.append(svg("text", { x: labelW + barW + 8, y: y + 19, class: "value" }, caption));
    root.append(g);
    const th = el("th", { scope: "row", class: r.kind, text: r.label });
    tbody.append(el("tr", { dataset: { kind: r.kind, id: r.id } }, th,
      el("td", { class: "n", text: String(r.count) }), el("td", { class: "n", text: r.target == null ? "-" : String(r.target) }),
      el("td", { class: "n", text: percent(r.count, r.target, t) })));
  });
  chart.append(root);
}

