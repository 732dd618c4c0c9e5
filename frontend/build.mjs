// Builds the hub's viewer pages into src/medcloud/web/viewer/ (a build artefact, git-ignored).
// Entries: viewer.js (cornerstone3D stack viewer), decodeImageFrameWorker.js (the DICOM image
// loader's decode worker, which viewer.js starts from its own folder), slide.js (OpenSeadragon).
// The codecs' .wasm files go to wasm/, OpenSeadragon's button images to osd-images/.
import { build } from "esbuild";
import { cpSync, mkdirSync, readFileSync, rmSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { brotliCompressSync, constants as zc, gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "medcloud", "web", "viewer");
const nm = join(here, "node_modules");

// Emscripten's Node.js branches and a few Node-first libraries under vtk.js name Node built-ins; in a
// browser those paths never run, so each resolves to an empty module. (`events` is a real polyfill.)
const nodeBuiltinsAsEmpty = {
  name: "node-builtins-as-empty",
  setup(b) {
    b.onResolve({ filter: /^(node:)?(fs|path|url|module|worker_threads|crypto|util|stream)$/ }, (a) => ({
      path: a.path,
      namespace: "empty",
    }));
    b.onLoad({ filter: /.*/, namespace: "empty" }, () => ({ contents: "module.exports = {};", loader: "js" }));
  },
};

// OpenSeadragon 6 injects a <style> element (touch-screen focus outline) that the hub's CSP (no inline
// styles) refuses; the build drops the injection and viewer.css carries the same rule. The build fails
// if the code to drop is not found (an upgraded OpenSeadragon must be looked at again).
const OSD_STYLE = "if (!document.querySelector('style[data-openseadragon-mobile-css]')) {";
const openSeadragonWithoutInlineStyle = {
  name: "openseadragon-without-inline-style",
  setup(b) {
    b.onLoad({ filter: /openseadragon[\\/]build[\\/]openseadragon[\\/]openseadragon\.js$/ }, (a) => {
      const src = readFileSync(a.path, "utf8");
      if (!src.includes(OSD_STYLE)) throw new Error("OpenSeadragon's style injection not found: review build.mjs");
      return { contents: src.replace(OSD_STYLE, "if (false) {"), loader: "js" };
    });
  },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "wasm"), { recursive: true });

await build({
  entryPoints: {
    viewer: join(here, "src", "viewer.js"),
    slide: join(here, "src", "slide.js"),
    decodeImageFrameWorker: join(nm, "@cornerstonejs", "dicom-image-loader", "dist", "esm", "decodeImageFrameWorker.js"),
  },
  outdir: out,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["chrome110", "firefox115", "safari16"],
  minify: true,
  sourcemap: false,
  legalComments: "linked",
  plugins: [nodeBuiltinsAsEmpty, openSeadragonWithoutInlineStyle],
  logLevel: "warning",
});

for (const name of readdirSync(here + "/public")) cpSync(join(here, "public", name), join(out, name));
// Only the decoders' .wasm files are fetched (by the worker, from wasm/: see wasmBasePath).
const WASM = {
  "codec-charls": "charlswasm_decode.wasm",
  "codec-libjpeg-turbo-8bit": "libjpegturbowasm_decode.wasm",
  "codec-libjxl": "jpegxlwasm_decode.wasm",
  "codec-openjpeg": "openjpegwasm_decode.wasm",
  "codec-openjph": "openjphjs.wasm",
};
for (const [codec, f] of Object.entries(WASM)) {
  cpSync(join(nm, "@cornerstonejs", codec, "dist", f), join(out, "wasm", f));
}
cpSync(join(nm, "openseadragon", "build", "openseadragon", "images"), join(out, "osd-images"), { recursive: true });

// Compressed siblings (.br, .gz) of every text or WebAssembly file over 1 KiB, made once here so the hub
// serves them by Accept-Encoding with no CPU per request (medcloud.hub.viewer.PrecompressedStaticFiles).
const COMPRESSIBLE = /\.(js|mjs|css|html|wasm|svg|json|txt)$/;
let raw = 0;
let packed = 0;
const compressAll = (dir) => {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      compressAll(path);
    } else if (COMPRESSIBLE.test(entry.name) && statSync(path).size > 1024) {
      const data = readFileSync(path);
      const br = brotliCompressSync(data, { params: { [zc.BROTLI_PARAM_QUALITY]: 11, [zc.BROTLI_PARAM_SIZE_HINT]: data.length } });
      writeFileSync(path + ".br", br);
      writeFileSync(path + ".gz", gzipSync(data, { level: 9 }));
      raw += data.length;
      packed += br.length;
    }
  }
};
compressAll(out);
console.log(`viewer built into ${out} (${(raw / 1e6).toFixed(1)} MB, ${(packed / 1e6).toFixed(1)} MB as brotli)`);
