// medcloud researcher's page: collection progress per society and hospital, a study browser with
// thumbnails and filters, cohorts and frozen datasets. Runs under a strict CSP (no inline script or
// style, no framework); every API call carries the bearer token kept in this tab's sessionStorage.

import { el } from "./dom.js";
import { FINDING_CODES, initialLanguage, translate } from "./i18n.js";
import { drawProgress } from "./research-chart.js";
import { cohortQuery, listCohorts, listDatasets } from "./research-cohorts.js";
import { hospitalSignOut, setupHospitalSignIn } from "./sso.js";
import { passkeyPanel, passkeyText } from "./passkey.js";

const TOKEN_KEY = "medcloud.token"; // the same key as the Gram-stain page
const LANG_KEY = "medcloud.lang";
const PAGE_SIZE = 20;
const $ = (id) => document.getElementById(id);

const state = {
  lang: "en",
  whoami: null,
  progress: null,
  metric: "cases",
  studies: null, // {items, total, limit, offset}
  filters: {},
  slides: null, // null: not loaded; "unavailable": the hub has no slide API
  cohorts: [],
  datasets: [],
  thumbUrls: [],
  lastStatus: null,
  signinHelp: { key: "signin.help", values: {}, isError: false },
  cohortStatus: null,
};

// A viewer page to go back to once signed in (?next=, from the viewer pages' hospital sign-in button): only a
// path of this hub under /viewer/, as the browser itself resolves it; anything else is ignored (no open redirect).
function viewerNext(raw, origin = location.origin) {
  if (typeof raw !== "string" || raw.length > 300 || !raw.startsWith("/viewer/") || /[\\\s]/.test(raw)) return null;
  let url;
  try {
    url = new URL(raw, origin);
  } catch {
    return null;
  }
  if (url.origin !== origin || !url.pathname.startsWith("/viewer/")) return null;
  return url.pathname + url.search;
}
const NEXT = viewerNext(new URLSearchParams(location.search).get("next"));

const t = (key, values) => translate(state.lang, key, values);
const token = () => sessionStorage.getItem(TOKEN_KEY);

class Unauthenticated extends Error {}

// -- status, language -------------------------------------------------------------------------------

function setStatus(key, values = {}, isError = false) {
  state.lastStatus = key ? { key, values, isError } : null;
  const node = $("status");
  node.textContent = key ? t(key, values) : "";
  node.classList.toggle("error", isError);
}

function applyLanguage() {
  document.documentElement.lang = state.lang;
  document.body.dataset.lang = state.lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-aria-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }
  $("lang").lang = state.lang === "ja" ? "en" : "ja";
  document.title = t("page.title");
  fillFindingOptions();
  if (state.lastStatus) setStatus(state.lastStatus.key, state.lastStatus.values, state.lastStatus.isError);
  showSigninHelp(state.signinHelp.key, state.signinHelp.values, state.signinHelp.isError);
  if (state.cohortStatus) showCohortStatus(state.cohortStatus.key, state.cohortStatus.values, state.cohortStatus.isError);
  renderWho();
  if (panel.current()) panel.show(panel.current());
  renderProgress();
  renderStudies();
  renderSlides();
  renderCohorts();
  renderDatasets();
}

function toggleLanguage() {
  state.lang = state.lang === "ja" ? "en" : "ja";
  localStorage.setItem(LANG_KEY, state.lang);
  applyLanguage();
}

// -- API --------------------------------------------------------------------------------------------

async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${token()}`);
  const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  if (response.status === 401) {
    signOut("signout.refused");
    throw new Unauthenticated("unauthenticated");
  }
  return response;
}

async function api(path, options = {}) {
  const response = await request(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = new Error(body.detail || body.title || `HTTP ${response.status}`);
    err.status = response.status;
    throw err;
  }
  return body;
}

function report(err) {
  if (!(err instanceof Unauthenticated)) setStatus("error", { error: err.message }, true);
}

// -- sign in and out --------------------------------------------------------------------------------

function showWorkspace(show) {
  $("signin").hidden = show;
  $("workspace").hidden = !show;
  document.body.dataset.signedIn = show ? "yes" : "no";
}

async function signIn(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  try {
    await start();
  } catch (err) {
    if (!(err instanceof Unauthenticated)) {
      sessionStorage.removeItem(TOKEN_KEY);
      showWorkspace(false);
      showSigninHelp("signin.failed", { error: err.message });
    }
  }
}

function showSigninHelp(key, values = {}, isError = true) {
  state.signinHelp = { key, values, isError };
  const help = $("token-help");
  help.textContent = t(key, values);
  help.classList.toggle("error", isError);
}

function signOut(messageKey) {
  hospitalSignOut(TOKEN_KEY); // a hospital-account session ends at the hub and the provider too
  sessionStorage.removeItem(TOKEN_KEY);
  revokeThumbs();
  state.whoami = null;
  panel.hide();
  state.progress = null;
  state.studies = null;
  state.cohorts = [];
  state.datasets = [];
  state.slides = null;
  state.lastStatus = null;
  state.cohortStatus = null;
  applyLanguage(); // re-renders every part from the now empty state: no data stays in the page
  showWorkspace(false);
  showSigninHelp(messageKey || "signout.done", {}, Boolean(messageKey));
  $("token").focus();
}

// A person's session shows the passkey step first (whoami says whether it is needed); true once usable.
async function start() {
  state.whoami = await api("/api/v1/whoami");
  if (panel.show(state.whoami)) {
    $("signin").hidden = true;
    $("workspace").hidden = true;
    document.body.dataset.signedIn = "passkey";
    return false;
  }
  if (NEXT) {
    // Signed in (and past the passkey) for a viewer page: back there, without this page's data.
    document.body.dataset.signedIn = "yes";
    window.location.replace(NEXT);
    return true;
  }
  fillProjectOptions();
  renderWho();
  showWorkspace(true);
  setStatus(null);
  await Promise.all([loadProgress(), loadStudies(0), loadSlides(), loadCohorts(), loadDatasets()]);
  document.body.dataset.loaded = "yes";
  return true;
}

const panel = passkeyPanel({ token, text: (key, values) => passkeyText(state.lang, key, values), onPassed: start });

function renderWho() {
  const who = state.whoami;
  $("who").textContent = who ? t("who", { role: who.role, projects: who.projects.join(", ") || "-" }) : "";
}

// -- collection progress ----------------------------------------------------------------------------

async function loadProgress() {
  try {
    state.progress = await api("/api/v1/progress");
  } catch (err) {
    report(err);
    return;
  }
  fillSiteOptions();
  renderProgress();
  renderStudies(); // hospital names come from the progress reply
}

function societyName(soc) {
  if (soc.society === null) return t("progress.noSociety");
  return (state.lang === "ja" && soc.display_name_ja) || soc.display_name || soc.society;
}

// Rows of the chart: each society, then its hospitals, with the chosen metric's count and target.
function progressRows() {
  const m = state.metric;
  const rows = [];
  for (const soc of state.progress ? state.progress.societies : []) {
    rows.push({ kind: "society", id: soc.society ?? "", label: societyName(soc), count: soc[m], target: soc[`target_${m}`] });
    for (const site of soc.sites) {
      rows.push({ kind: "site", id: site.site, label: site.display_name || site.site, count: site[m], target: site[`target_${m}`] });
    }
  }
  return rows;
}

function renderProgress() {
  const chart = $("progress-chart");
  const tbody = $("progress-table").querySelector("tbody");
  chart.replaceChildren();
  tbody.replaceChildren();
  if (!state.progress) return;
  $("progress-total").textContent = t("progress.total", state.progress.totals);
  drawProgress(chart, tbody, progressRows(), state.metric, t);
}

// -- study browser ----------------------------------------------------------------------------------

function fillProjectOptions() {
  const select = $("filters").elements.project;
  select.replaceChildren(el("option", { value: "", "data-i18n": "any", text: t("any") }));
  for (const p of state.whoami ? state.whoami.projects : []) select.append(el("option", { value: p, text: p }));
}

function fillSiteOptions() {
  const select = $("filters").elements.site;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", "data-i18n": "any", text: t("any") }));
  for (const soc of state.progress ? state.progress.societies : []) {
    for (const site of soc.sites) select.append(el("option", { value: site.site, text: site.display_name || site.site }));
  }
  select.value = chosen;
}

function fillFindingOptions() {
  const select = $("filters").elements.finding;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", "data-i18n": "any", text: t("any") }));
  for (const code of FINDING_CODES) select.append(el("option", { value: code, text: t(`finding.${code}`) }));
  select.value = chosen;
}

// The form's filters as the API names them (empty fields left out).
function formFilters() {
  const f = $("filters").elements;
  const out = {};
  for (const name of ["project", "site", "modality", "body_part", "date_from", "date_to", "sex", "age_min", "age_max"]) {
    const value = f[name].value.trim();
    if (value) out[name] = ["modality", "body_part"].includes(name) ? value.toUpperCase() : value;
  }
  if (f.finding.value) out.finding = `${f.finding.value}:${f.finding_status.value}`;
  return out;
}

async function loadStudies(offset) {
  const params = new URLSearchParams({ ...state.filters, limit: String(PAGE_SIZE), offset: String(offset) });
  $("results-summary").textContent = t("loading");
  document.body.dataset.studiesLoaded = "no";
  try {
    state.studies = await api(`/api/v1/studies?${params}`);
  } catch (err) {
    $("results-summary").textContent = "";
    report(err);
    return;
  }
  renderStudies();
  loadThumbs();
  document.body.dataset.studiesLoaded = "yes";
}

function revokeThumbs() {
  for (const url of state.thumbUrls) URL.revokeObjectURL(url);
  state.thumbUrls = [];
}

function renderStudies() {
  const tbody = $("studies").querySelector("tbody");
  const page = state.studies;
  tbody.replaceChildren();
  if (!page) return;
  const { items, total, offset } = page;
  $("results-summary").textContent = total
    ? t("results", { from: offset + 1, to: offset + items.length, total })
    : t("results.none");
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + items.length >= total;
  const siteNames = new Map();
  for (const soc of state.progress ? state.progress.societies : []) {
    for (const site of soc.sites) siteNames.set(site.site, site.display_name);
  }
  for (const s of items) {
    const thumb = el("td", { class: "thumb-cell" });
    const known = s._thumb;
    if (known) thumb.append(el("img", { src: known, alt: s.description || s.study_uid, class: "thumb" }));
    else thumb.append(el("span", { class: "thumb placeholder", text: t("thumb.none") }));
    const viewer = el("a", { href: `/viewer/?study=${encodeURIComponent(s.study_uid)}`, class: "open", text: t("open") });
    const sex = (s.patient_sex || "").toUpperCase();
    const sexLabel = ["M", "F", "O"].includes(sex) ? t(`sex.${sex}`) : sex;
    const sexAge = [sexLabel, s.patient_age || ""].filter(Boolean).join(" / ") || "-";
    tbody.append(el("tr", { dataset: { study: s.study_uid, modalities: s.modalities.join(",") } },
      thumb,
      el("td", { text: s.study_date || "-" }),
      el("td", { class: "modality", text: s.modalities.join(", ") || "-" }),
      el("td", { text: s.description || "-" }),
      el("td", { text: siteNames.get(s.site) || s.site, title: s.site }),
      el("td", { class: "mono", text: s.patient_pseudonym }),
      el("td", { text: sexAge }),
      el("td", { class: "n", text: String(s.instance_count) }),
      el("td", {}, viewer)));
  }
}

// Thumbnails come from the hub's DICOMweb (`/dicom-web/studies/{uid}/thumbnail`); fetched with the
// token and shown as blob URLs. Until the hub serves them (404, 406) the placeholder stays.
async function loadThumbs() {
  revokeThumbs();
  const page = state.studies;
  await Promise.all(page.items.map(async (s) => {
    let response;
    try {
      response = await request(`/dicom-web/studies/${encodeURIComponent(s.study_uid)}/thumbnail`, {
        headers: { Accept: "image/jpeg, image/png;q=0.9, image/gif;q=0.5" },
      });
    } catch {
      return;
    }
    const type = response.headers.get("content-type") || "";
    if (!response.ok || !type.startsWith("image/") || state.studies !== page) return;
    const url = URL.createObjectURL(await response.blob());
    state.thumbUrls.push(url);
    s._thumb = url;
    const cell = document.querySelector(`tr[data-study="${CSS.escape(s.study_uid)}"] .thumb-cell`);
    if (cell) cell.replaceChildren(el("img", { src: url, alt: s.description || s.study_uid, class: "thumb" }));
  }));
  $("studies").dataset.thumbs = "done";
}

function applyFilters(event) {
  if (event) event.preventDefault();
  state.filters = formFilters();
  loadStudies(0);
}

function resetFilters() {
  $("filters").reset();
  applyFilters();
}

async function loadSlides() {
  try {
    const response = await request("/api/v1/slides");
    if (response.status === 404 || response.status === 405) {
      state.slides = "unavailable";
    } else if (!response.ok) {
      state.slides = "unavailable";
    } else {
      const body = await response.json();
      state.slides = Array.isArray(body) ? body : body.items || body.slides || [];
    }
  } catch (err) {
    if (err instanceof Unauthenticated) return;
    state.slides = "unavailable";
  }
  renderSlides();
}

function renderSlides() {
  const list = $("slides");
  list.replaceChildren();
  if (state.slides === null) return;
  if (state.slides === "unavailable") {
    list.append(el("li", { class: "help", text: t("slides.unavailable") }));
    return;
  }
  if (state.slides.length === 0) list.append(el("li", { class: "help", text: t("slides.none") }));
  for (const s of state.slides) {
    const id = s.slide_id ?? s.id;
    const label = [s.name || s.filename || id, s.site, s.width && s.height ? `${s.width}×${s.height}` : ""].filter(Boolean).join(" · ");
    list.append(el("li", {}, el("span", { text: `${label} ` }),
      el("a", { href: `/viewer/slide.html?id=${encodeURIComponent(id)}`, text: t("slides.open") })));
  }
}

// -- cohorts and datasets ---------------------------------------------------------------------------

async function saveCohort(event) {
  event.preventDefault();
  const name = $("cohort-name").value.trim();
  if (!name) return;
  const filters = formFilters();
  const body = { name, query: cohortQuery(filters) };
  if (filters.project) body.projects = [filters.project];
  try {
    const response = await request("/api/v1/cohorts", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const reply = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(reply.detail || reply.title || `HTTP ${response.status}`);
    showCohortStatus(response.status === 201 ? "cohort.saved" : "cohort.same", { name }, false);
    $("cohort-name").value = "";
    await loadCohorts();
  } catch (err) {
    if (err instanceof Unauthenticated) return;
    showCohortStatus("cohort.failed", { error: err.message }, true);
  }
}

function showCohortStatus(key, values, isError) {
  state.cohortStatus = key ? { key, values, isError } : null;
  const node = $("cohort-status");
  node.textContent = key ? t(key, values) : "";
  node.classList.toggle("error", Boolean(isError));
}

async function loadCohorts() {
  try {
    const cohorts = (await api("/api/v1/cohorts")).items;
    // Each cohort's count now (the hub counts matching images in the cohort's projects).
    await Promise.all(cohorts.map(async (c) => {
      const params = new URLSearchParams({ project: c.projects[0] });
      try {
        c.matches = (await api(`/api/v1/cohorts/${encodeURIComponent(c.name)}?${params}`)).matches;
      } catch (err) {
        if (err instanceof Unauthenticated) throw err;
        c.matches = null;
      }
    }));
    state.cohorts = cohorts;
  } catch (err) {
    report(err);
    return;
  }
  renderCohorts();
}

async function loadDatasets() {
  try {
    state.datasets = (await api("/api/v1/datasets")).items;
  } catch (err) {
    report(err);
    return;
  }
  renderDatasets();
}

function renderCohorts() {
  listCohorts($("cohort-list"), state.cohorts, t);
}

function renderDatasets() {
  listDatasets($("dataset-list"), state.datasets, t);
}

// -- start ------------------------------------------------------------------------------------------

function init() {
  state.lang = initialLanguage(localStorage.getItem(LANG_KEY), navigator.languages || [navigator.language]);
  $("lang").addEventListener("click", toggleLanguage);
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  $("filters").addEventListener("submit", applyFilters);
  $("reset").addEventListener("click", resetFilters);
  $("prev").addEventListener("click", () => loadStudies(Math.max(0, state.studies.offset - PAGE_SIZE)));
  $("next").addEventListener("click", () => loadStudies(state.studies.offset + PAGE_SIZE));
  $("cohort-form").addEventListener("submit", saveCohort);
  for (const radio of document.querySelectorAll("input[name=metric]")) {
    radio.addEventListener("change", () => {
      state.metric = radio.value;
      renderProgress();
    });
  }
  applyLanguage();
  if (token()) {
    start().catch((err) => {
      if (!(err instanceof Unauthenticated)) {
        showWorkspace(false);
        showSigninHelp("signin.failed", { error: err.message });
      }
    });
  } else {
    showWorkspace(false);
  }
  setupHospitalSignIn({
    tokenKey: TOKEN_KEY,
    button: $("sso-button"),
    returnTo: NEXT ? `/research?next=${encodeURIComponent(NEXT)}` : "/research",
    onSignedIn: start,
    onEnded: () => signOut("signout.refused"),
  }).catch((err) => {
    showWorkspace(false);
    showSigninHelp("signin.failed", { error: err.message });
  });
  document.body.dataset.ready = "yes";
}

init();
