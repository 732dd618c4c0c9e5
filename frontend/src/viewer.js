// The hub's study viewer: cornerstone3D's stack viewport over the hub's own DICOMweb (/dicom-web),
// every request carrying the signed-in user's bearer token. /viewer/?study=<StudyInstanceUID>
import {
  init as coreInit,
  getShouldUseCPURendering,
  eventTarget,
  RenderingEngine,
  Enums as CoreEnums,
} from "@cornerstonejs/core";
import {
  init as toolsInit,
  addTool,
  ToolGroupManager,
  WindowLevelTool,
  PanTool,
  ZoomTool,
  StackScrollTool,
  Enums as ToolEnums,
} from "@cornerstonejs/tools";
import { init as loaderInit, wadors } from "@cornerstonejs/dicom-image-loader";
import { $, api, token, setUpSignIn, showError, reportFailure } from "./common.js";

const WADO_ROOT = `${location.origin}/dicom-web`;
const DICOM_JSON = "application/dicom+json";
const UID = /^[0-9]+(\.[0-9]+)*$/;
const ENGINE_ID = "medcloud-engine";
const VIEWPORT_ID = "stack";
const TOOL_GROUP_ID = "medcloud-tools";
const { MouseBindings } = ToolEnums;
// Each tool keeps its own button; the toolbar picks which one the left button also drives.
const TOOLS = {
  WindowLevel: { tool: WindowLevelTool, own: [] },
  Pan: { tool: PanTool, own: [{ mouseButton: MouseBindings.Auxiliary }] },
  Zoom: { tool: ZoomTool, own: [{ mouseButton: MouseBindings.Secondary }] },
};

let viewport = null;
let toolGroup = null;
let rendered = 0;

/** A DICOM JSON attribute's first value (PN as its alphabetic group). */
function first(item, tag) {
  const v = item?.[tag]?.Value?.[0];
  if (v && typeof v === "object" && "Alphabetic" in v) return v.Alphabetic;
  return v;
}

function seriesLabel(s) {
  const parts = [first(s, "00080060"), first(s, "00200011") !== undefined ? `#${first(s, "00200011")}` : null,
    first(s, "0008103E")];
  const n = first(s, "00201209");
  return `${parts.filter((p) => p !== undefined && p !== null && p !== "").join(" ")}${n ? ` (${n})` : ""}`;
}

/** Slices in display order: by position along the slice normal when known, else by InstanceNumber. */
function sortInstances(instances) {
  const key = (inst) => {
    const pos = inst["00200032"]?.Value;
    const ori = inst["00200037"]?.Value;
    if (pos?.length === 3 && ori?.length === 6) {
      const [a, b, c, d, e, f] = ori.map(Number);
      const n = [b * f - c * e, c * d - a * f, a * e - b * d];
      return n[0] * pos[0] + n[1] * pos[1] + n[2] * pos[2];
    }
    return Number(first(inst, "00200013") ?? 0);
  };
  return instances
    .map((inst) => ({ inst, k: key(inst), n: Number(first(inst, "00200013") ?? 0) }))
    .sort((x, y) => x.k - y.k || x.n - y.n)
    .map((x) => x.inst);
}

function imageIdsFor(study, series, instances) {
  const ids = [];
  for (const inst of sortInstances(instances)) {
    const sop = first(inst, "00080018");
    const frames = Number(first(inst, "00280008") ?? 1) || 1;
    for (let f = 1; f <= frames; f++) {
      const id = `wadors:${WADO_ROOT}/studies/${study}/series/${series}/instances/${sop}/frames/${f}`;
      wadors.metaDataManager.add(id, inst);
      ids.push(id);
    }
  }
  return ids;
}

function showStatus() {
  if (!viewport) return;
  const i = viewport.getCurrentImageIdIndex();
  const n = viewport.getImageIds().length;
  $("slice-info").textContent = `Slice ${i + 1} / ${n}`;
  const voi = viewport.getProperties().voiRange;
  if (voi) {
    const ww = voi.upper - voi.lower;
    $("voi-info").textContent = `W ${Math.round(ww)} L ${Math.round(voi.lower + ww / 2)}`;
    document.body.dataset.voi = `${Math.round(voi.lower)},${Math.round(voi.upper)}`;
  }
  document.body.dataset.imageIndex = String(i);
}

function selectLeftTool(name) {
  for (const [key, { tool, own }] of Object.entries(TOOLS)) {
    toolGroup.setToolDisabled(tool.toolName);
    const bindings = key === name ? [{ mouseButton: MouseBindings.Primary }, ...own] : own;
    if (bindings.length) toolGroup.setToolActive(tool.toolName, { bindings });
  }
  for (const b of document.querySelectorAll("[data-tool]")) {
    b.setAttribute("aria-pressed", String(b.dataset.tool === name));
  }
}

async function openSeries(study, series, button) {
  for (const b of document.querySelectorAll("#series-list button")) b.removeAttribute("aria-current");
  button.setAttribute("aria-current", "true");
  document.body.dataset.loading = "yes";
  const instances = await api(`${WADO_ROOT}/studies/${study}/series/${series}/metadata`, DICOM_JSON);
  const ids = imageIdsFor(study, series, instances);
  if (!ids.length) throw new Error("this series has no images");
  await viewport.setStack(ids, Math.floor(ids.length / 2));
  // A new series starts from its own window (its DICOM VOI) and a fitted camera.
  viewport.resetProperties();
  viewport.resetCamera();
  viewport.render();
  document.body.dataset.series = series;
  document.body.dataset.sliceCount = String(ids.length);
  document.body.dataset.loading = "no";
  showStatus();
}

async function setUpViewer() {
  await coreInit();
  // WebGL when the browser has it; cornerstone falls back to its CPU renderer otherwise.
  document.body.dataset.backend = getShouldUseCPURendering() ? "cpu" : "webgl";
  toolsInit();
  loaderInit({
    maxWebWorkers: 1,
    wasmBasePath: new URL("wasm/", import.meta.url).href,
    beforeSend: () => ({ Authorization: `Bearer ${token()}` }),
  });
  for (const { tool } of Object.values(TOOLS)) addTool(tool);
  addTool(StackScrollTool);

  const element = $("viewport");
  element.addEventListener("contextmenu", (e) => e.preventDefault());
  const engine = new RenderingEngine(ENGINE_ID);
  engine.enableElement({ viewportId: VIEWPORT_ID, type: CoreEnums.ViewportType.STACK, element });
  viewport = engine.getViewport(VIEWPORT_ID);

  toolGroup = ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
  for (const { tool } of Object.values(TOOLS)) toolGroup.addTool(tool.toolName);
  toolGroup.addTool(StackScrollTool.toolName);
  toolGroup.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  toolGroup.addViewport(VIEWPORT_ID, ENGINE_ID);
  selectLeftTool("WindowLevel");

  // A frame that cannot be fetched or decoded is said on the page, not only in the console.
  eventTarget.addEventListener(CoreEnums.Events.IMAGE_LOAD_ERROR, (e) => {
    const detail = Array.isArray(e.detail) ? e.detail[0]?.reason : e.detail?.error;
    const status = detail?.status ?? detail?.request?.status;
    document.body.dataset.imageError = "yes";
    showError(`Could not load or decode an image${status ? ` (HTTP ${status})` : ""}: ${detail?.message || detail || ""}`);
  });
  element.addEventListener(CoreEnums.Events.IMAGE_RENDERED, () => {
    rendered += 1;
    document.body.dataset.rendered = String(rendered);
    showStatus();
  });
  element.addEventListener("keydown", (e) => {
    const n = viewport.getImageIds().length;
    const step = { ArrowUp: -1, ArrowLeft: -1, PageUp: -5, ArrowDown: 1, ArrowRight: 1, PageDown: 5 }[e.key];
    if (!step || !n) return;
    e.preventDefault();
    const next = Math.min(n - 1, Math.max(0, viewport.getCurrentImageIdIndex() + step));
    viewport.setImageIdIndex(next);
  });
  for (const b of document.querySelectorAll("[data-tool]")) {
    b.addEventListener("click", () => selectLeftTool(b.dataset.tool));
  }
  $("reset").addEventListener("click", () => {
    viewport.resetCamera();
    viewport.resetProperties();
    viewport.render();
  });
  new ResizeObserver(() => engine.resize(true, true)).observe(element);
}

async function main() {
  document.body.dataset.ready = "no";
  if (!setUpSignIn()) {
    document.body.dataset.ready = "signin";
    return;
  }
  const study = new URLSearchParams(location.search).get("study") || "";
  if (!UID.test(study) || study.length > 64) {
    showError("Give a study: /viewer/?study=<StudyInstanceUID> / 検査UIDを指定してください");
    document.body.dataset.ready = "failed";
    return;
  }
  try {
    // The study's own row first: a study outside the user's projects is simply not found.
    const studies = await api(`${WADO_ROOT}/studies?StudyInstanceUID=${study}&includefield=00081030`, DICOM_JSON);
    if (!studies.length) {
      showError("Study not found, or not in your projects / 検査が見つかりません");
      document.body.dataset.ready = "failed";
      return;
    }
    const s = studies[0];
    $("study-label").textContent = [first(s, "00081030"), first(s, "00080020"), study].filter(Boolean).join(" · ");
    const series = await api(`${WADO_ROOT}/studies/${study}/series`, DICOM_JSON);
    series.sort((a, b) => Number(first(a, "00200011") ?? 0) - Number(first(b, "00200011") ?? 0));
    $("signin").hidden = true;
    $("workspace").hidden = false;
    document.body.dataset.signedIn = "yes";
    await setUpViewer();
    const list = $("series-list");
    for (const s of series) {
      const uid = first(s, "0020000E");
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = seriesLabel(s) || uid;
      button.title = uid;
      button.dataset.series = uid;
      button.addEventListener("click", () => openSeries(study, uid, button).catch(reportFailure));
      li.append(button);
      list.append(li);
    }
    document.body.dataset.seriesCount = String(series.length);
    const firstButton = list.querySelector("button");
    if (firstButton) await openSeries(study, firstButton.dataset.series, firstButton);
    document.body.dataset.ready = "yes";
    $("viewport").focus();
  } catch (err) {
    reportFailure(err);
  }
}

main();
