// The hub's whole-slide viewer: OpenSeadragon over the hub's DeepZoom tiles, fetched with the
// signed-in user's bearer token (loadTilesWithAjax + ajaxHeaders). /viewer/slide.html?id=<slide_id>
import OpenSeadragon from "openseadragon";
import { $, api, token, setUpSignIn, showError, reportFailure } from "./common.js";

const SLIDE_ID = /^[A-Za-z0-9._-]{1,128}$/;
const NICE = [1, 2, 5];

/** The longest round length (1, 2 or 5 × 10^k µm) that fits in `maxPx` screen pixels. */
export function niceLength(umPerScreenPx, maxPx = 160) {
  const limit = umPerScreenPx * maxPx;
  let best = null;
  for (let exp = -3; exp <= 6; exp++) {
    for (const m of NICE) {
      const um = m * 10 ** exp;
      if (um <= limit) best = um;
    }
  }
  return best;
}

function formatLength(um) {
  if (um >= 1000) return `${um / 1000} mm`;
  if (um >= 1) return `${um} µm`;
  return `${um * 1000} nm`;
}

function setUpScaleBar(viewer, mppX) {
  const bar = $("scalebar-bar");
  const text = $("scalebar-text");
  const update = () => {
    const item = viewer.world.getItemAt(0);
    if (!item) return;
    // Screen pixels per image pixel at the current zoom.
    const zoom = item.viewportToImageZoom(viewer.viewport.getZoom(true));
    const umPerScreenPx = mppX / zoom;
    const um = niceLength(umPerScreenPx);
    if (!um) return;
    const px = um / umPerScreenPx;
    bar.style.width = `${Math.round(px)}px`;
    text.textContent = formatLength(um);
    document.body.dataset.scalebar = `${um}um/${Math.round(px)}px`;
  };
  $("scalebar").hidden = false;
  viewer.addHandler("animation", update);
  viewer.addHandler("open", update);
  viewer.addHandler("resize", update);
}

async function main() {
  if (!setUpSignIn()) {
    document.body.dataset.ready = "signin";
    return;
  }
  const id = new URLSearchParams(location.search).get("id") || "";
  if (!SLIDE_ID.test(id)) {
    showError("Give a slide: /viewer/slide.html?id=<slide id> / スライドIDを指定してください");
    document.body.dataset.ready = "failed";
    return;
  }
  try {
    const info = await api(`/api/v1/slides/${encodeURIComponent(id)}`);
    $("signin").hidden = true;
    $("workspace").hidden = false;
    document.body.dataset.signedIn = "yes";
    const mpp = Array.isArray(info.mpp) ? info.mpp : null;
    $("slide-label").textContent = [
      info.label || info.name || info.id || id,
      `${info.width} × ${info.height} px`,
      mpp ? `${Number(mpp[0]).toFixed(3)} µm/px` : "pixel size unknown",
    ].join(" · ");
    const tilesUrl = info.dzi_url.endsWith("/") ? info.dzi_url : `${info.dzi_url}/`;
    // DeepZoom numbering: level L is the image scaled to 2^(L - maxLevel); maxLevel is full size.
    const maxLevel = Number.isInteger(info.dz_levels)
      ? info.dz_levels - 1
      : Math.ceil(Math.log2(Math.max(info.width, info.height)));
    const source = new OpenSeadragon.DziTileSource(
      info.width, info.height, info.tile_size, info.overlap ?? 0, tilesUrl, info.format || "jpeg",
      undefined, 0, maxLevel,
    );
    let tilesLoaded = 0;
    const viewer = OpenSeadragon({
      element: $("slide"),
      prefixUrl: new URL("osd-images/", import.meta.url).href,
      tileSources: source,
      loadTilesWithAjax: true,
      ajaxHeaders: { Authorization: `Bearer ${token()}` },
      showNavigator: true,
      maxZoomPixelRatio: 4,
      gestureSettingsMouse: { clickToZoom: true },
    });
    viewer.addHandler("tile-loaded", () => {
      tilesLoaded += 1;
      document.body.dataset.tilesLoaded = String(tilesLoaded);
    });
    viewer.addHandler("tile-load-failed", (e) => {
      console.warn("tile failed", e.message);
      document.body.dataset.tileFailed = "yes";
    });
    viewer.addHandler("open-failed", (e) => reportFailure(new Error(e.message)));
    viewer.addHandler("open", () => {
      document.body.dataset.ready = "yes";
    });
    let moves = 0;
    viewer.addHandler("animation-finish", () => {
      moves += 1;
      document.body.dataset.moves = String(moves); // the view settled after a pan or zoom
      document.body.dataset.zoom = String(viewer.viewport.getZoom(true));
    });
    if (mpp) setUpScaleBar(viewer, Number(mpp[0]));
    window.medcloudSlideViewer = viewer; // for the browser test and the console
  } catch (err) {
    reportFailure(err);
  }
}

main();
