// Cohorts and frozen datasets on the researcher's page: the page's filters as a cohort query, and the
// lists of saved cohorts (with their count now) and of frozen dataset versions.

import { el } from "./dom.js";

// The current filters as a cohort query: one image term, and one term per report finding.
export function cohortQuery(filters) {
  const image = {};
  for (const name of ["site", "modality", "body_part", "date_from", "date_to", "sex"]) {
    if (filters[name]) image[name] = filters[name];
  }
  for (const name of ["age_min", "age_max"]) if (filters[name]) image[name] = Number(filters[name]);
  const terms = Object.keys(image).length ? [{ kind: "image", ...image }] : [];
  if (filters.finding) {
    const [code, status] = filters.finding.split(":");
    terms.push({ kind: "finding", code, status });
  }
  return terms;
}

function describeTerm(term) {
  const parts = Object.entries(term).filter(([k]) => k !== "kind" && k !== "negate").map(([k, v]) => `${k}=${v}`);
  return `${term.negate ? "NOT " : ""}${parts.join(" ")}`;
}

export function listCohorts(list, cohorts, t) {
  list.replaceChildren();
  if (cohorts.length === 0) list.append(el("li", { class: "help", text: t("cohorts.none") }));
  for (const c of cohorts) {
    const query = c.query.map(describeTerm).join(" AND ") || "*";
    const count = c.matches == null ? "" : t("cohorts.matches", { n: c.matches });
    list.append(el("li", { dataset: { cohort: c.name, matches: c.matches ?? "" } },
      el("strong", { text: c.name }), ` · ${c.projects.join(", ")} · `,
      el("span", { class: "count", text: count }), " · ",
      el("code", { text: `${t("cohorts.query")}: ${query}` })));
  }
}

export function listDatasets(list, datasets, t) {
  list.replaceChildren();
  if (datasets.length === 0) list.append(el("li", { class: "help", text: t("datasets.none") }));
  for (const d of datasets) {
    const splits = Object.entries(d.split_counts || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    const withdrawn = d.status === "withdrawn" ? ` · ${t("datasets.withdrawn")}` : "";
    list.append(el("li", { dataset: { dataset: d.id } },
      el("strong", { text: d.name }), " ",
      el("code", { text: d.id.slice(0, 12) }),
      ` · ${t("datasets.files", { n: d.file_count })}${splits ? ` (${splits})` : ""} · ${d.created_at.slice(0, 10)}${withdrawn}`));
  }
}
