// medcloud Gram-stain page: sign in with a token, upload or capture a smear, draw the model's boxes.
// Runs under a strict CSP (no inline script or style); every API call carries the bearer token.

import { hospitalSignOut, setupHospitalSignIn } from "./sso.js";
import { passkeyPanel, passkeyText } from "./passkey.js";

const TOKEN_KEY = "medcloud.token";
const $ = (id) => document.getElementById(id);
const state = { stream: null, timer: null, busy: false, lastImage: null, result: null };

// One colour per label code, stable across calls.
const PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
  "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000"];
const colours = new Map();
function colourFor(code) {
  if (!colours.has(code)) colours.set(code, PALETTE[colours.size % PALETTE.length]);
  return colours.get(code);
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${token()}`);
  const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  if (response.status === 401) {
    signOut("Your token was refused (401). Please sign in again.");
    throw new Error("unauthenticated");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.detail || body.title || `HTTP ${response.status}`);
  }
  return body;
}

function showWorkspace(show) {
  $("signin").hidden = show;
  $("workspace").hidden = !show;
  document.body.dataset.signedIn = show ? "yes" : "no";
}

// A person's session shows the passkey step first (whoami says whether it is needed); true once usable.
async function enter() {
  const who = await api("/api/v1/whoami");
  if (panel.show(who)) {
    $("signin").hidden = true;
    $("workspace").hidden = true;
    document.body.dataset.signedIn = "passkey";
    return false;
  }
  await loadModels();
  showWorkspace(true);
  return true;
}

async function signIn(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  try {
    if (await enter()) {
      $("file").focus();
      setStatus("Signed in. Upload a photo or start the webcam.");
    } else {
      ($("passkey-use").hidden ? $("passkey-register") : $("passkey-use")).focus();
    }
  } catch (err) {
    if (err.message !== "unauthenticated") {
      sessionStorage.removeItem(TOKEN_KEY);
      showWorkspace(false);
      const help = $("token-help");
      help.textContent = `Sign-in failed: ${err.message}`;
      help.classList.add("error");
    }
  }
}

function signOut(message) {
  hospitalSignOut(TOKEN_KEY); // a hospital-account session ends at the hub and the provider too
  sessionStorage.removeItem(TOKEN_KEY);
  stopCamera();
  panel.hide();
  showWorkspace(false);
  const help = $("token-help");
  help.textContent = message || "Signed out.";
  help.classList.toggle("error", Boolean(message));
  $("token").focus();
}

// The model's robustness warning, as its card states it (never decided here): shown while it is set.
function showRobustness(model) {
  const en = model ? model.robustness_warning : null;
  const ja = model ? model.robustness_warning_ja : null;
  $("robustness-warning-en").textContent = en || "";
  $("robustness-warning-ja").textContent = ja || "";
  $("robustness-warning").hidden = !en;
  document.body.dataset.robustnessWarning = en ? "yes" : "no";
}

async function loadModels() {
  const body = await api("/api/v1/models");
  const model = (body.models || []).find((m) => m.name === "gram-stain") || (body.models || [])[0];
  if (model) {
    // Lead with the worst site style the model never saw in training, not the average.
    const head = model.headline || {};
    let figures = "";
    if (head.worst_unseen_site) {
      const verdict = head.worst_unseen_verdict_accuracy != null
        ? `, Gram verdict ${Math.round(head.worst_unseen_verdict_accuracy * 100)}%` : "";
      figures = `; on a never-seen site style (${head.worst_unseen_site}) synthetic mAP50 ${Number(head.worst_unseen_map50).toFixed(2)}${verdict}`;
    } else if (model.metrics && model.metrics.map50 != null) {
      figures = `, held-out synthetic mAP50 ${model.metrics.map50}`;
    }
    $("model-info").textContent =
      `Model ${model.name} ${model.version}${model.synthetic ? " (SYNTHETIC training data)" : ""}${figures}.`;
  } else {
    $("model-info").textContent = "No model is registered on this hub.";
  }
  showRobustness(model);
}

function drawImage(source, width, height) {
  const canvas = $("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(source, 0, 0, width, height);
}

function drawBoxes(result) {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  if (state.lastImage) {
    ctx.drawImage(state.lastImage, 0, 0, canvas.width, canvas.height);
  } else {
    // No preview (a file type this browser cannot draw, such as TIFF): the boxes on a blank field of
    // the photo's shape, at most 960 pixels wide.
    const k = Math.min(1, 960 / result.image.width);
    canvas.width = Math.max(1, Math.round(result.image.width * k));
    canvas.height = Math.max(1, Math.round(result.image.height * k));
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  const sx = canvas.width / result.image.width;
  const sy = canvas.height / result.image.height;
  const lw = Math.max(2, Math.round(canvas.width / 320));
  ctx.font = `${Math.max(12, Math.round(canvas.width / 55))}px system-ui, "Noto Sans JP", sans-serif`;
  ctx.textBaseline = "bottom";
  for (const det of result.detections) {
    const [x0, y0, x1, y1] = det.box;
    const c = colourFor(det.label.code);
    ctx.strokeStyle = c;
    ctx.lineWidth = lw;
    ctx.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
    const text = `${det.label.en} / ${det.label.ja} ${(det.score * 100).toFixed(0)}%`;
    const tw = ctx.measureText(text).width + 6;
    const th = parseInt(ctx.font, 10) + 4;
    const ty = Math.max(th, y0 * sy);
    ctx.fillStyle = "rgba(255,255,255,0.85)";
    ctx.fillRect(x0 * sx, ty - th, tw, th);
    ctx.fillStyle = "#111";
    ctx.fillText(text, x0 * sx + 3, ty - 2);
  }
  canvas.dataset.boxesDrawn = String(result.detections.length);
}

function showResult(result) {
  state.result = result;
  drawBoxes(result);
  const n = result.detections.length;
  // Yeast and red cells are not bacteria: a yeast-only smear has no Gram verdict, only the yeast note.
  const yeast = result.yeast || null;
  let verdict;
  if (result.verdict) verdict = `Gram verdict: ${result.verdict.en} (${result.verdict.ja})`;
  else if (yeast) verdict = "No bacterial Gram verdict (細菌のグラム判定なし)";
  else verdict = "Crop vote: no bacteria recognised";
  $("verdict").textContent = verdict;
  const yeastText = yeast ? `${yeast.en} / ${yeast.ja}` : "";
  $("yeast").textContent = yeastText;
  $("yeast").hidden = !yeast;
  document.body.dataset.yeast = yeast ? "yes" : "no";
  if (result.model) showRobustness(result.model);
  const tbody = $("counts").querySelector("tbody");
  tbody.replaceChildren();
  for (const row of result.counts) {
    const tr = document.createElement("tr");
    const en = document.createElement("td");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.backgroundColor = colourFor(row.code);  // CSSOM, allowed under style-src 'self'
    sw.setAttribute("aria-hidden", "true");
    en.append(sw, row.en);
    const ja = document.createElement("td");
    ja.lang = "ja";
    ja.textContent = row.ja;
    const count = document.createElement("td");
    count.className = "n";
    count.textContent = String(row.count);
    tr.append(en, ja, count);
    tbody.append(tr);
  }
  $("counts").hidden = result.counts.length === 0;
  const species = result.counts.map((r) => `${r.count} ${r.en}`).join(", ") || "no organisms";
  setStatus(`${n} box${n === 1 ? "" : "es"} found: ${species}. ${verdict}.${yeast ? ` ${yeast.en}.` : ""}`);
  $("canvas").setAttribute("aria-label", `Image with ${n} detected organism groups outlined: ${species}`);
  $("canvas-caption").textContent = `${n} detections · model ${result.model_version} (SYNTHETIC)`;
  $("meta").textContent = `Model ${result.model_version} · ${result.latency_ms} ms · image not kept on the server`;
  document.body.dataset.boxes = String(n);
  document.body.dataset.imageSize = `${result.image.width}x${result.image.height}`;  // the boxes' frame
}

async function analyse(blob) {
  if (state.busy) return null;
  state.busy = true;
  setStatus("Analysing…");
  try {
    const threshold = Number($("threshold").value) || 0.3;
    const result = await api(`/api/v1/inference?threshold=${encodeURIComponent(threshold)}`, {
      method: "POST",
      headers: { "Content-Type": blob.type || "application/octet-stream" },
      body: blob,
    });
    showResult(result);
    return result;
  } catch (err) {
    if (err.message !== "unauthenticated") setStatus(`Analysis failed: ${err.message}`, true);
    return null;
  } finally {
    state.busy = false;
  }
}

async function onFile() {
  const file = $("file").files[0];
  if (!file) return;
  // The browser draws the photo upright (EXIF orientation); the hub answers in that same frame.
  const bitmap = await createImageBitmap(file).catch(() => null);
  state.lastImage = bitmap;
  if (bitmap) {
    drawImage(bitmap, bitmap.width, bitmap.height);
  } else {
    // TIFF (a microscope camera's usual format) and other files this browser cannot draw: the hub may
    // still read them, so they are analysed and the boxes drawn without the photo behind them.
    $("canvas").getContext("2d").clearRect(0, 0, $("canvas").width, $("canvas").height);
    $("canvas-caption").textContent = "This browser cannot show this file; the boxes are drawn without it.";
  }
  const result = await analyse(file);
  if (!bitmap && result) {
    $("canvas-caption").textContent += " (no preview: this browser cannot show this file type)";
  }
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser has no camera access.", true);
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    setStatus(`Camera unavailable: ${err.message}`, true);
    return;
  }
  const video = $("video");
  video.srcObject = state.stream;
  await video.play();
  $("camera-capture").disabled = false;
  $("camera-auto").disabled = false;
  $("camera-stop").disabled = false;
  $("camera-start").disabled = true;
  $("camera-capture").focus();
  setStatus("Webcam on. Press “Capture and analyse”.");
}

function stopCamera() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("camera-capture").disabled = true;
  $("camera-auto").disabled = true;
  $("camera-auto").checked = false;
  $("camera-stop").disabled = true;
  $("camera-start").disabled = false;
}

async function captureFrame() {
  const video = $("video");
  if (!state.stream || !video.videoWidth) {
    setStatus("The webcam has no picture yet.", true);
    return;
  }
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth;
  frame.height = video.videoHeight;
  frame.getContext("2d").drawImage(video, 0, 0);
  const bitmap = await createImageBitmap(frame);
  state.lastImage = bitmap;
  drawImage(bitmap, frame.width, frame.height);
  const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.92));
  await analyse(blob);
}

function toggleAuto() {
  if (state.timer) clearInterval(state.timer);
  state.timer = $("camera-auto").checked ? setInterval(captureFrame, 2000) : null;
}

const panel = passkeyPanel({ token, text: (key, values) => passkeyText("en", key, values), onPassed: enter });

function init() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  $("file").addEventListener("change", onFile);
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  $("camera-capture").addEventListener("click", captureFrame);
  $("camera-auto").addEventListener("change", toggleAuto);
  if (token()) {
    enter().catch(() => {});
  } else {
    showWorkspace(false);
  }
  setupHospitalSignIn({
    tokenKey: TOKEN_KEY,
    button: $("sso-button"),
    returnTo: "/",
    onSignedIn: async () => {
      await loadModels();
      showWorkspace(true);
      setStatus("Signed in with your hospital account. Upload a photo or start the webcam.");
    },
    onEnded: (reason) => signOut(`Your session ended: ${reason}. Please sign in again.`),
  }).catch((err) => {
    const help = $("token-help");
    help.textContent = `Sign-in failed: ${err.message}`;
    help.classList.add("error");
  });
  document.body.dataset.ready = "yes";
}

init();
